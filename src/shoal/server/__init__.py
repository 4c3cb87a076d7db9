"""`shoal serve`: a node serving many databases over HTTP, in two dialects."""
