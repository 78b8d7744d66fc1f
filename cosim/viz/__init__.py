"""Seeing a run: a Mesa model of its agents on the feeder, a SolaraViz page, and a report.

    records.py   a run folder's tables, indexed by step (RunRecords; RunFolderError)
    layout.py    where buses, lines, households and markets sit on the feeder map
    trades.py    a step's fills as edges between trading households
    agents.py    the Mesa agents: thin views over the step on display
    live.py      a cosim.Simulation stepped on demand, its records flushed each step
    model.py     FeederModel, the Mesa model (replay or live)
    figures.py   the page's pictures, redrawing only what a step changes
    page.py      the SolaraViz page (`cosim viz`)
    server.py    serving it on a free port, offline
    report.py    `cosim report`: PNGs and report.md
"""
