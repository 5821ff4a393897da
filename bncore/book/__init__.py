"""What the book's pages use: checked claims, plotting in the book's style, interactive panels.

These modules sit on top: they may import from :mod:`bncore.norm`, :mod:`bncore.theory` and
:mod:`bncore.experiments`, and nothing there imports from here. Plotting takes results; it
never runs a simulation.
"""
