"""The experiment a serving process routes by (`python -m serving --experiment FILE`): its
config file, reloaded when the file changes, and its routing state, read from the experiments
store that the experiment's one owner writes (`stores.experiments`).

A config that fails to load on a change is refused, logged and counted, and the one before it
goes on routing: a typo never takes the routes down. So is a change into a shadow experiment:
a shadow's scorer is a process the server starts with (restart it with the file). Config and state change together, in one
swap, so a request sees one or the other whole.
"""
from __future__ import annotations

import logging

from experiments import config, routing
from stores.experiments import open_experiment_store

LOG = logging.getLogger(__name__)


class RunningExperiment:
    def __init__(self, path: str, store: str):
        self.path = path
        self.store = open_experiment_store(store)
        self._file = config.Watched(path)
        self._current = (config.load(path), {}, 0)  # config, state, state version
        self.reload_errors = 0
        self.refresh()

    @property
    def config(self) -> config.Experiment:
        return self._current[0]

    @property
    def state(self) -> tuple[dict, int]:
        return self._current[1], self._current[2]

    def assign(self, user_id: str, request_id: str) -> routing.Assignment:
        experiment, state, _ = self._current
        return routing.route(experiment, state, user_id, request_id)

    def refresh(self) -> None:
        experiment = self._current[0]
        try:
            new = self._file.changed()
            if new is not None:
                if new.kind == "shadow" and experiment.kind != "shadow":
                    raise config.ConfigError(f"{new.name} became a shadow experiment: a shadow needs a server "
                                             "started with one (restart it with this file)")
                experiment = new
                LOG.info("experiment %s reloaded from %s", experiment.name, self.path)
        except (OSError, config.ConfigError) as e:
            self.reload_errors += 1
            LOG.error("the experiment file changed and is refused; routing on by the one before: %s", e)
        stored = self.store.get(experiment.name)
        state, version = (stored.state, stored.version) if stored else ({}, 0)
        self._current = (experiment, state, version)

    def close(self) -> None:
        self.store.close()
