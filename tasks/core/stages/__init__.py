"""The pipeline's stages, one module each, and the typed records that travel between them.

    prepare                      config → the collection ready, the embedding runtime chosen
    read   list[SourceFile]    → Group[ReadFile]       lookup, skip unchanged, fetch, sniff, parse
    chunk  Group[ReadFile]     → Group[ChunkedFile]    token-aware chunks with pages
    embed  Group[ChunkedFile]  → Group[EmbeddedFile]   one model call for the group
    store  Group[EmbeddedFile] → GroupResult           the crash-safe write; one outcome per file

A ``Group`` carries the files still in the chain and those already settled (unchanged,
rejected) to the end, so the last stage returns exactly one outcome per listed file. Nothing
here imports Prefect: ``tasks.stages`` wraps each stage in a task of the same name.
"""
