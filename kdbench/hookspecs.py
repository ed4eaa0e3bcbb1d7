"""Every kdbench hook, in one place.

A plugin is a module or object with functions named after these hooks, decorated with
``kdbench.hookimpl``, and registered through the entry-point group ``kdbench``::

    [project.entry-points.kdbench]
    my_method = "my_package.my_method"

Pluggy lets an implementation accept fewer arguments than the spec, so hooks gain arguments
over time without breaking plugins; they are never renamed or removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from kdbench.methods import Method

PROJECT = "kdbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- methods ---------------------------------------------------------------------------------


@hookspec
def kdbench_methods() -> list[Method]:
    """Return the distillation methods this plugin provides.

    Every registered plugin is called and the lists are concatenated; two methods with the
    same name are an error at start-up.

    :return: a list of :class:`kdbench.methods.Method` (name, family, teacher signals, config
        dataclass, loss function, optional extra trainable modules).
    """
