"""Media services (layer 4): content generation, encoding and decoding through PyAV."""
