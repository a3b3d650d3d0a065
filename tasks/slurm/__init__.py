"""JupyterLab as a Slurm job on a compute node, reached through the login node (``serve --slurm``).

options: the request (flags over ``[hosts.NAME.slurm]``), validated; job: the job script and sbatch argv;
queue: squeue's output, states, time left; run: the thin execution part (submit, wait, status, stop, logs).
"""
