"""`unstable explore`: a population of variants of an equilibrium piece, searched for the band
between stasis and explosion (Broad & Grierson's "(un)stable equilibrium" as search; novelty
search after Lehman & Stanley, interactive evolution after Picbreeder).

One concern per module:

    genome.py     what varies (the genes) and how a child is bred: mutation, crossover, validation
    tomlout.py    a piece table written back as TOML
    breeding.py   generations: seeds, run folders, lineage, reproducing a variant from lineage
    records.py    the exploration folder's files (explore.json, lineage.csv, scores.csv, marks.json)
    task.py       one variant trained and measured: the Dask task
    measures.py   the measures from fixed probe latents, the descriptor and novelty
    selection.py  the band, scores.csv's rows, the parents of the next generation
    explorer.py   the driver: generations bred, trained on Dask, scored, selected; resume
    sheet.py      the contact sheet server (the control page's access rules); page.py its page
    export.py     a variant written as a piece file
    keeper.py     the keeper: holds a playing system in the band with the same measures
    cli.py        the click command
"""
