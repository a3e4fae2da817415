"""``import aerostack_meter.auto``: the one-import form, ``init()`` from the environment.

The only module of the package with an import side effect.
"""

from ._global import init

init()
