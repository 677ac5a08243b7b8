"""Optional bridges to other ecosystems, each imported only on demand (``import ncsn_fast`` never loads them).

- :mod:`ncsn_fast.integrations.diffusers`: the network as a diffusers ``ModelMixin``, annealed Langevin dynamics as a
  ``SchedulerMixin`` and ``NCSNv2Pipeline(DiffusionPipeline)`` (``pip install 'ncsn-fast[diffusers]'``).
"""
