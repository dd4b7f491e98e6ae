"""Recipes: runs built from the components, and the only place that resolves names like `embedded-base`.

`toy` is the experiment harness on the embedded arithmetic task (base model, training rows, methods, evaluation) that
`demo` (`prefix-rft demo`) and `compare` (`prefix-rft compare`) share; `report` writes their tables and plots.
Components (`core`, `trl`, `verify`, `eval`, `data`, `baselines`) never import this package.
"""
