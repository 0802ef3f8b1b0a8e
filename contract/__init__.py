"""The contract between the plugin and the engine, standard library only.

Both sides import it: the parameter specifications of every algorithm, the
JSON-lines protocol parser and the partial-file naming rule live here once.
"""
