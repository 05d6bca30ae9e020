"""Device meshes and the logical-axis sharding rules."""
