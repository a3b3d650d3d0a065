"""labhop: put JupyterLab on a machine you reach over SSH, and get you to it.

The package is split in two layers:

* a pure plan layer (inventory, options, facts, plans, config rendering) that
  never imports fabric, invoke or paramiko and is tested table-driven;
* a thin execution layer (``executor``, ``connect``) that probes facts and
  applies planned steps over ``c.run``.
"""
