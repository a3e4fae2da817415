"""aerostack-meter: meter LLM token usage per consumer for the Aerostack Gateway billing API.

    import aerostack_meter
    aerostack_meter.init(api_id="api_chat_bot")        # or: import aerostack_meter.auto
    with aerostack_meter.consumer("usr_123"):
        client.chat.completions.create(...)            # metered, reported in the background
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._context import carry_consumer, consumer
from ._errors import (
    AerostackMeterError,
    BudgetExceededError,
    BudgetUnavailableError,
    ConfigError,
    MissingConsumerError,
)
from ._global import aflush, current_consumer, flush, get_meter, init, log, shutdown, stats
from ._lazy import lazy_names as _lazy_names
from ._usage import MetricPolicy, Usage
from ._version import __version__

if _TYPE_CHECKING:
    from ._budget import Budget
    from ._config import DEFAULT_BASE_URL, Settings
    from ._cost import CostPolicy, cost_policy
    from ._events import UsageEvent
    from ._instrument import instrument, uninstrument
    from ._meter import Meter
    from ._stats import Stats
    from ._wrap import wrap

# Imported on first use, so `import aerostack_meter` stays light (issue 16; what it loads is
# checked by tests/core/test_import_light.py): the meter and its delivery machinery (init() or the
# first log() loads them), settings, budgets, cost tables, and wrap()/instrument()/uninstrument(),
# which need wrapt (and wrapt imports asyncio and importlib.metadata).
_LAZY = {
    "Budget": "._budget",
    "CostPolicy": "._cost",
    "DEFAULT_BASE_URL": "._config",
    "Meter": "._meter",
    "Settings": "._config",
    "Stats": "._stats",
    "UsageEvent": "._events",
    "cost_policy": "._cost",
    "instrument": "._instrument",
    "uninstrument": "._instrument",
    "wrap": "._wrap",
}

__all__ = [
    "DEFAULT_BASE_URL",
    "AerostackMeterError",
    "Budget",
    "BudgetExceededError",
    "BudgetUnavailableError",
    "ConfigError",
    "CostPolicy",
    "Meter",
    "MetricPolicy",
    "MissingConsumerError",
    "Settings",
    "Stats",
    "Usage",
    "UsageEvent",
    "__version__",
    "aflush",
    "carry_consumer",
    "consumer",
    "cost_policy",
    "current_consumer",
    "flush",
    "get_meter",
    "init",
    "instrument",
    "log",
    "shutdown",
    "stats",
    "uninstrument",
    "wrap",
]


__getattr__, __dir__ = _lazy_names(globals(), _LAZY)
