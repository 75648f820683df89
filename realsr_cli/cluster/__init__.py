"""`realsr upscale --ray`: the same upscale job spread over a Ray cluster with Ray Data, resumable from a journal.

`plan` divides the work (units sized by pixels, workers sized to the cluster), `journal` records finished outputs
beside them, `worker` is what runs on the cluster (one opened Upscaler per Ray Data actor, and the job's ledger),
and `job` drives it all from the machine where the command runs. ray is an extra (`realsr-cli[ray]`): no module
here imports it at module level, so `realsr upscale` without --ray starts as fast as before. No torch here.
"""
