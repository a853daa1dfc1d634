"""The DVC pipeline's stages, one module per stage of dvc.yaml and named as it (the `nb_*` stages all run
`notebook`): each holds its command-line entry `main(argv)` (what `basisn <command>` calls, see basisn/cli.py) and
the checks of its own inputs. `common` holds what the stages share. Nothing in the library (layers, basis, train,
data, hardware, ...) imports from here, and no stage module imports another's private names.
"""
