"""Noise models, one module each, registered by name in llm4dsr.names.NOISE_MODELS and
found by llm4dsr.registry. Each defines

    draw(original, seq, counts, rng) -> replacements

the replacement of each noisy interaction: ``original`` the clean items replaced,
``seq`` the user-sorted clean log (user, pos, item), ``counts`` the catalogue's
interaction counts indexed by item id (``counts[0] = 0``, so items are 1..len(counts)-1),
``rng`` the setting's random stream. A replacement is never the original item.
"""
