"""The training driver: builds each training step as a DAG of exact kernel jobs and runs it.

- `datasets`   bundled digits / mnist5k as fixed-point integers, fixed seeded split
- `fixedpoint` exact driver-side arithmetic: rates, slopes, seeded integer PRNG
- `model`      MLP architecture, scales, seeded init, weights hash
- `plan`       `Plan` (tensors, jobs, results), `JobRunner` protocol, step/forward plan builders
- `local`      `LocalRunner`: executes a plan in-process (the reference)
- `training`   the epoch loop over any `JobRunner`
- `commands`   `layerchain train`
"""
