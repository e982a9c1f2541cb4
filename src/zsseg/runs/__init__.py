"""Running over many images: reading the next image ahead while the models work on this one
(`read_ahead`), sharding across torchrun's processes (`distributed`), progress, and timing."""
