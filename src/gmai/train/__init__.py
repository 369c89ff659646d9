"""gmai.train: recipe dataclasses, data mixture, packing, the three-stage trainer.

(OMP_WAIT_POLICY=PASSIVE, which multi-threaded CPU training needs on a shared machine, is set in
``gmai/__init__.py`` so it applies to every entry point.)
"""
