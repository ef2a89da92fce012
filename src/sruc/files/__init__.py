"""Image files: reading and writing (8 and 16 bits), discovery, atomic writes."""
