"""Is an embedding healthy? Statistics (:mod:`.stats`), pictures (:mod:`.plots`), the HTML
report (:mod:`.report`) and :func:`inspect_store`, which runs them for ``embstore inspect``.

The layers import downwards only: stats <- plots <- report <- inspect.
"""
