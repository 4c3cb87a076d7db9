"""The cluster: membership, placement, leases, the follower loop, routing, handoff."""
