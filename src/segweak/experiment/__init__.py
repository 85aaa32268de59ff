"""Experiment orchestration: planning, data preparation, running, results and the demo.

* :mod:`~segweak.experiment.plan`: the experiment config, every run of the protocol, run names;
* :mod:`~segweak.experiment.sweep`: sweep axes and their points (one config per point);
* :mod:`~segweak.experiment.data`: the data source, the prepared store and the split manifests;
* :mod:`~segweak.experiment.run`: ``run_experiment`` (locked, resumable);
* :mod:`~segweak.experiment.results`: results rows, ``results.json`` / ``results.csv``;
* :mod:`~segweak.experiment.demo`: ``segweak demo`` on synthetic data.

:mod:`segweak.report` only renders what these write.
"""
