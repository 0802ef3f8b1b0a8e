"""Floor 1: what every job uses (errors, parameters, job context, runtime, model files,
manifest, outputs, reports). Imports nothing else of the engine."""
