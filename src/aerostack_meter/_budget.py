"""Budgets: reserve a call's worst case before it is sent, settle it to the actual usage after.

A :class:`Budget` keeps one account per consumer: what was spent and what is reserved by calls
in flight, against either a static limit (per period, counted from what this meter billed) or a
balance read from a source (a callable of yours, or the gateway's wallet), cached for a TTL.
Check-and-reserve happens under one lock, so concurrent calls can never together reserve more
than fits. No I/O ever happens under the lock; a balance lookup runs in a worker thread (awaited
by async callers, so the event loop never blocks).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN
from typing import TYPE_CHECKING, Any, Literal

from ._errors import BudgetExceededError, BudgetUnavailableError, ConfigError
from ._estimate import count_chars, tokens_from_chars
from ._forkmark import mark as fork_mark
from ._log import log_once

if TYPE_CHECKING:
    from ._cost import CostPolicy
    from ._meter import Meter
    from ._usage import Usage

__all__ = ["Budget", "Reservation", "check_budget"]

Period = Literal["day", "month"]
Balance = Callable[[str], "int | None"]

_TEXT_KEYS = ("messages", "system", "input", "instructions", "prompt", "contents")
# a JSON request body's text (Bedrock invoke_model: Anthropic, Nova, Llama, Mistral, Titan, Cohere)
_BODY_TEXT_KEYS = (*_TEXT_KEYS, "inputText", "texts", "message")
_MAX_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_gen_len")
# where APIs that nest their generation settings keep the output cap (keys or attributes)
_CONFIG_KEYS = ("config", "generation_config", "generationConfig", "inferenceConfig", "textGenerationConfig")
_NESTED_MAX_KEYS = (*_MAX_KEYS, "maxTokens", "maxOutputTokens", "max_new_tokens", "maxTokenCount")
_MODEL_KEYS = ("model", "modelId")
# how many outputs one request generates, each up to the output cap (OpenAI's n and best_of,
# Gemini's candidate_count in its config)
_CHOICE_KEYS = ("n", "best_of")
_NESTED_CHOICE_KEYS = ("candidate_count", "candidateCount")
# request text kept inside a settings object (Gemini's system instruction)
_NESTED_TEXT_KEYS = ("system_instruction", "systemInstruction")
_DEFAULT_MAX_OUTPUT = 32_768
# the ledger metrics that add up to a call's tokens: metrics="tokens" writes "tokens",
# metrics="split" its parts (each call writes one family, so the two never overlap)
_TOKEN_METRICS = ("tokens", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="aerostack-budget")
    return _pool


def _pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # the parent's workers do not exist in a child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool_after_fork)


class _SourceError(Exception):
    """The budget source could not answer (raised, timed out, answered nonsense). Its message is
    ours, never the source's or a key's, so it is said in the warning as it is."""


class _Account:
    __slots__ = ("balance", "clears", "fetched", "future", "period", "recent", "reserved", "spent")

    def __init__(self) -> None:
        self.spent = 0        # settled since the period start (limits) or since the balance read
        self.reserved = 0     # worst cases of calls in flight
        self.balance: int | None = None
        self.fetched = -math.inf
        self.future: concurrent.futures.Future[int | None] | None = None
        self.recent: deque[tuple[float, int]] | None = None  # balance sources: (when, settled)
        # Budget.gateway(): (read_at, when): usage settled before ``read_at`` was delivered by
        # ``when`` (the reporter had nothing of this consumer's left; see _clear), newest last
        self.clears: deque[tuple[float, float]] = deque(maxlen=16)
        self.period = 0.0


class Reservation:
    """One call's reserved worst case. Settled (to the actual usage) or released exactly once."""

    __slots__ = ("account", "amount", "budget", "done")

    def __init__(self, budget: Budget, account: _Account, amount: int) -> None:
        self.budget = budget
        self.account = account
        self.amount = amount
        self.done = False

    def settle(self, actual: int) -> None:
        self.budget._close(self, actual)

    def release(self) -> None:
        self.budget._close(self, 0)

    def hold(self, usage: Usage) -> None:
        """At the call's end, on the caller's thread: hold a bound of the usage (exact for
        tokens; the model's dearest rates for money) instead of the worst case until the reporter
        settles it exactly. The bound may pass the worst case (a prompt longer than estimated,
        output beyond ``max_tokens``): the hold grows to it, so no later call is let through on
        usage the reporter has not settled yet. Cheap: no pricing here."""
        amount = self.budget.bound_of(usage)
        if amount is not None and amount != self.amount:
            self.budget._resize(self, amount)

    def settle_usage(self, usage: Usage) -> None:
        """Settle to what ``usage`` costs in the budget's unit (runs on the reporter thread)."""
        self.budget._close(self, self.budget.amount_of(usage, self.amount))


class Budget:
    """A budget source for ``init(budget=...)`` / ``wrap(client, budget=...)``.

    ``Budget(limits={"usr_1": 50_000}, period="day")``: a static limit per consumer and period
    (``"day"``, ``"month"`` in UTC, or ``None`` for ever), counted against what this meter billed
    (its local ledger, read once when the meter starts, plus every call settled since).
    ``default`` is the limit of consumers not in ``limits`` (``None``: unlimited).
    :meth:`from_balance` and :meth:`gateway` read a remaining balance instead.

    ``unit``: ``"tokens"`` (a call's ``total_tokens``), ``"cost"`` (micro-USD, priced like
    ``metrics="cost"``) or a :func:`cost_policy` (its unit). ``max_output_tokens``: the output
    assumed for a request that sets no ``max_tokens`` (default: the model's context window from
    the price table when known, else 32768).
    """

    def __init__(self, limits: Mapping[str, int] | None = None, period: Period | None = None, *,
                 default: int | None = None, unit: str | CostPolicy = "tokens",
                 max_output_tokens: int | None = None) -> None:
        if period not in (None, "day", "month"):
            raise ConfigError("period", f'must be "day", "month" or None, got {period!r}')
        self.limits = dict(limits or {})
        for name, value in [*self.limits.items(), ("default", default)]:
            if name == "default" and value is None:
                continue
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError("limits", f"must map consumer ids to non-negative ints, got {name!r}: {value!r}")
        self.default = default
        self.period = period
        self._balance: Balance | None = None
        self._gateway = False
        self.ttl = 0.0
        self.timeout = 2.0
        self.lag: float | None = None
        self._init_common(unit, max_output_tokens)

    def _init_common(self, unit: Any, max_output_tokens: int | None) -> None:
        from ._cost import CostPolicy

        self.policy: CostPolicy | None = None
        if isinstance(unit, CostPolicy):
            self.policy = unit
        elif unit == "cost":
            from ._cost import default_policy

            self.policy = default_policy()
        elif unit != "tokens":
            raise ConfigError("unit", f'must be "tokens", "cost" or a cost_policy(), got {unit!r}')
        self.unit = self.policy.metric if self.policy is not None else "tokens"
        if max_output_tokens is not None and (isinstance(max_output_tokens, bool)
                                              or not isinstance(max_output_tokens, int) or max_output_tokens < 1):
            raise ConfigError("max_output_tokens", f"must be a positive int, got {max_output_tokens!r}")
        self.max_output_tokens = max_output_tokens
        self._lock = threading.Lock()
        self._here = fork_mark()  # [0] reads 0 in a forked child
        self._accounts: dict[str, _Account] = {}
        self._outputs: dict[tuple[str, str], int] = {}
        self._bound: weakref.WeakSet[Meter] = weakref.WeakSet()  # meters whose ledger was read
        self._period_end = -math.inf
        self._http: Any = None

    @classmethod
    def from_balance(cls, balance: Balance, *, ttl: float = 5.0, timeout: float = 2.0,
                     unit: str | CostPolicy = "tokens", max_output_tokens: int | None = None,
                     lag: float | None = None) -> Budget:
        """A budget read from ``balance(consumer_id) -> remaining`` (an int in the budget's unit, or
        ``None`` for no limit), e.g. your own wallet store. Each consumer's answer is cached for
        ``ttl`` seconds, minus what is settled and reserved meanwhile. A call slower than
        ``timeout`` seconds, or one that raises, is a source failure (see ``on_budget_error``).
        ``lag``: how long usage takes to show in the balance once settled (default: two flush
        intervals plus a second); usage settled within ``lag`` of a read is still subtracted."""
        if not callable(balance):
            raise ConfigError("budget", "from_balance needs a callable consumer_id -> remaining")
        b = cls.__new__(cls)
        b.limits, b.default, b.period = {}, None, None
        b._balance, b._gateway = balance, False
        b._set_timing(ttl, timeout, lag)
        b._init_common(unit, max_output_tokens)
        return b

    @classmethod
    def gateway(cls, *, ttl: float = 5.0, timeout: float = 2.0, unit: str | CostPolicy = "tokens",
                max_output_tokens: int | None = None, lag: float | None = None) -> Budget:
        """A budget read from the consumer's wallet at the billing API
        (``GET {base_url}/gateway/billing/balance?consumerId=...`` with the meter's key; the gateway
        emulator serves it), cached for ``ttl`` seconds. A consumer with no wallet is unlimited.
        Settled usage stays subtracted from a read balance until the reporter had nothing of the
        consumer's left to deliver before the read began (and ``lag`` has passed, as for
        ``from_balance``); usage the API refused for good stays subtracted (docs/budgets.md)."""
        b = cls.__new__(cls)
        b.limits, b.default, b.period = {}, None, None
        b._balance, b._gateway = None, True
        b._set_timing(ttl, timeout, lag)
        b._init_common(unit, max_output_tokens)
        return b

    def after_fork(self) -> None:
        """In a forked child: new lock and HTTP client, and no lookup or reservation of the
        parent's (its calls in flight settle in the parent; its lookups never finish here), so
        each consumer's balance is read again. Once per process."""
        if self._here[0]:
            return
        self._here[0] = 1
        self._lock = threading.Lock()
        self._http = None
        for acct in self._accounts.values():
            acct.reserved = 0
            acct.future = None
            acct.fetched = -math.inf

    def _set_timing(self, ttl: float, timeout: float, lag: float | None = None) -> None:
        for name, v in (("ttl", ttl), ("timeout", timeout), ("lag", 0 if lag is None else lag)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isinf(v):
                raise ConfigError(name, f"must be a finite non-negative number, got {v!r}")
        self.ttl, self.timeout = float(ttl), float(timeout)
        self.lag = None if lag is None else float(lag)

    def __repr__(self) -> str:
        kind = "gateway" if self._gateway else "balance" if self._balance else f"limits, period={self.period!r}"
        return f"Budget({kind}, unit={self.unit!r})"

    @property
    def reads_balance(self) -> bool:
        return self._balance is not None or self._gateway

    # -- what a call may cost ------------------------------------------------------------------
    def worst_case(self, provider: str, kwargs: Mapping[str, Any], *, output: bool = True) -> int | None:
        """The call's worst case in the budget's unit: the input estimate (one token per four
        characters of request text) plus ``max_tokens`` (or the model's output limit). ``None``
        for a money budget whose model has no price. A request whose text and settings are in a
        JSON ``body`` (Bedrock ``invoke_model``) is read from it. ``output=False``: an endpoint
        that produces no output tokens (embeddings), so none is reserved; an embedding model's
        ``body`` (Bedrock) is taken as one too."""
        model = kwargs.get("model")
        if type(model) is not str:
            model = next((m for k in _MODEL_KEYS if type(m := kwargs.get(k)) is str), "")
        keys: tuple[str, ...] = _TEXT_KEYS
        body = kwargs.get("body")
        if body is not None:
            parsed = _json_body(body)
            if parsed is not None:
                kwargs, keys = parsed, _BODY_TEXT_KEYS
                if "embed" in model.lower():
                    output = False
        chars = 0
        for k in keys:
            if k in kwargs:
                chars += count_chars(kwargs[k])
        for v in _settings(kwargs, _NESTED_TEXT_KEYS):
            chars += count_chars(v)
        inp = tokens_from_chars(chars)
        out = None
        if not output:
            out = 0
        else:
            for k in _MAX_KEYS:
                v = kwargs.get(k)
                if type(v) is int and v >= 0:
                    out = v
                    break
            else:
                out = _nested_max(kwargs)
        if out is None:
            out = self._output_limit(provider, model, inp)
        if out:
            out *= _choices(kwargs)
        if self.policy is None:
            return inp + out
        rates = self.policy.rates(provider, model, inp) if model else None
        if rates is None:
            return None
        return math.ceil(inp * rates[0] + out * rates[1])

    def _output_limit(self, provider: str, model: str, inp: int) -> int:
        if self.max_output_tokens is not None:
            return self.max_output_tokens
        key = (provider, model)
        window = self._outputs.get(key)
        if window is None:
            window = _DEFAULT_MAX_OUTPUT
            try:
                from ._cost import default_policy

                window = default_policy().context_window(provider, model) or _DEFAULT_MAX_OUTPUT
            except Exception:  # the [cost] extra is absent: no table of model limits
                pass
            self._outputs[key] = window
        return max(window - inp, 1)

    def bound_of(self, usage: Usage) -> int | None:
        """An upper bound of what ``usage`` costs in the budget's unit, without pricing it."""
        if self.policy is None:
            return usage.total_tokens
        rates = self.policy.rates(usage.provider, usage.model, usage.input_tokens) if usage.model else None
        if rates is None:
            return None
        return math.ceil(usage.input_tokens * rates[0] + usage.output_tokens * rates[1])

    def amount_of(self, usage: Usage, fallback: int) -> int:
        """What ``usage`` costs in the budget's unit (an unpriced model: ``fallback``)."""
        if self.policy is None:
            return usage.total_tokens
        exact = self.policy.units_exact(usage)
        return fallback if exact is None else int(exact.to_integral_value(ROUND_HALF_EVEN))

    # -- reserving -----------------------------------------------------------------------------
    def bind(self, meter: Meter) -> None:
        """Count what this meter's local ledger billed in the current period (limits only): the
        rows in the budget's unit. For ``"tokens"`` that is ``tokens`` rows and ``metrics="split"``'s
        parts (``input_tokens``, ``output_tokens``, ``cached_input_tokens``, ``cache_write_tokens``,
        which add up to the call's tokens); for money, rows of the policy's metric (written by
        ``metrics="cost"`` or that policy). Other rows cannot be converted (the ledger keeps no
        model), so they are not counted."""
        if meter in self._bound:
            return
        self._bound.add(meter)
        if self._gateway:  # the wallet is debited by this meter's deliveries: told each outcome
            meter._delivery_budgets.append(self)
        if self.policy is not None:
            self._warm()
        if self.reads_balance:
            return
        from .sinks import LedgerSink

        sink = meter.sink
        if not isinstance(sink, LedgerSink):
            return
        start = self._period_start(time.time())
        try:
            import sqlite3

            from ._sqlite import connect

            metrics = _TOKEN_METRICS if self.policy is None else (self.unit,)
            conn = connect(sink.path, timeout=5.0)
            try:
                rows = conn.execute(f"SELECT consumer_id, SUM(units) FROM ledger WHERE metric IN"
                                    f" ({', '.join('?' * len(metrics))}) AND ts >= ? GROUP BY consumer_id",
                                    (*metrics, start)).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return
        with self._lock:
            self._roll(time.time())
            for consumer_id, units in rows:
                self._account(consumer_id).spent += int(units)

    def _warm(self) -> None:
        """Import the price table in the background now, not on the first budgeted call."""
        policy = self.policy
        if policy is not None:
            from ._cost import load_table

            _executor().submit(load_table)

    def _period_start(self, now: float) -> float:
        if self.period is None:
            return 0.0
        d = datetime.fromtimestamp(now, tz=timezone.utc)
        if self.period == "day":
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()
        return datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp()

    def _roll(self, now: float) -> None:
        """A new period: every consumer starts again (what is in flight stays reserved)."""
        if now < self._period_end:
            return
        start = self._period_start(now)
        d = datetime.fromtimestamp(start, tz=timezone.utc)
        if self.period == "day":
            self._period_end = start + 86_400
        elif self.period == "month":
            self._period_end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
        else:
            self._period_end = math.inf
        for acct in self._accounts.values():
            acct.spent = 0

    def _account(self, consumer_id: str) -> _Account:
        acct = self._accounts.get(consumer_id)
        if acct is None:
            acct = self._accounts[consumer_id] = _Account()
        return acct

    def reserve(self, meter: Meter, consumer_id: str, provider: str, kwargs: Mapping[str, Any],
                *, wait: bool = True, output: bool = True) -> Reservation | None:
        """Reserve the call's worst case, or raise :class:`BudgetExceededError`. ``None``: nothing
        to reserve (an unlimited consumer, or a source failure under ``on_budget_error="open"``).
        With ``wait=False`` (async callers, after :meth:`prefetch`) no lookup is waited for.
        ``output=False``: the endpoint produces no output tokens (embeddings)."""
        if not self._here[0]:
            self.after_fork()
        need = self.worst_case(provider, kwargs, output=output)
        if need is None:  # its worst case in money is unknown: needed=0 (documented)
            return self._failed(meter, consumer_id, 0, "unpriced", None)
        if self.reads_balance:
            return self._reserve_balance(meter, consumer_id, need, wait)
        limit = self.limits.get(consumer_id, self.default)
        if limit is None:
            return None
        with self._lock:
            if self.period is not None:
                self._roll(time.time())
            acct = self._account(consumer_id)
            remaining = limit - acct.spent - acct.reserved
            if need <= remaining:
                acct.reserved += need
                return Reservation(self, acct, need)
        return self._refuse(meter, consumer_id, need, remaining)

    def _reserve_balance(self, meter: Meter, consumer_id: str, need: int, wait: bool) -> Reservation | None:
        """``wait=False``: the :meth:`prefetch` just before read the balance (or its lookup is
        still running, or failed), so this reserve uses what it left and never starts another
        lookup (with ``ttl=0`` that would read the balance twice a call)."""
        fut = None
        with self._lock:
            acct = self._account(consumer_id)
            if wait and time.monotonic() - acct.fetched >= self.ttl:
                fut = self._start_fetch(meter, consumer_id, acct)
        if fut is not None and wait:
            try:
                fut.result(self.timeout)
            except Exception as exc:  # any failure of the source (a timeout included)
                if acct.fetched == -math.inf:  # nothing known at all
                    return self._failed(meter, consumer_id, need, "source", exc)
        with self._lock:
            if acct.fetched == -math.inf:
                failed = True
            else:
                failed = False
                if acct.balance is None:
                    return None
                remaining = acct.balance - acct.spent - acct.reserved
                if need <= remaining:
                    acct.reserved += need
                    return Reservation(self, acct, need)
        if failed:
            return self._failed(meter, consumer_id, need, "source", self._lookup_error(acct))
        return self._refuse(meter, consumer_id, need, remaining)

    def _lookup_error(self, acct: _Account) -> BaseException | None:
        """Why the account's balance is unknown, for a reserve that did not wait on the lookup
        itself (async callers: :meth:`prefetch` awaited it): the source's exception, or a
        timeout while it is still running."""
        fut = acct.future
        if fut is None or fut.cancelled():
            return None
        if not fut.done():
            return TimeoutError(f"the balance lookup did not answer within {self.timeout:g} s")
        return fut.exception()

    async def prefetch(self, meter: Meter, consumer_id: str) -> None:
        """For async callers: await a stale balance's lookup in a worker thread (never blocking
        the event loop); failures are left for :meth:`reserve` to handle."""
        if not self._here[0]:
            self.after_fork()
        with self._lock:
            acct = self._account(consumer_id)
            if time.monotonic() - acct.fetched < self.ttl:
                return
            fut = self._start_fetch(meter, consumer_id, acct)
        import asyncio  # only async callers pay for it

        with contextlib.suppress(Exception):  # reserve() decides what a failed lookup means
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.timeout)

    def _start_fetch(self, meter: Meter, consumer_id: str, acct: _Account) -> concurrent.futures.Future[int | None]:
        """Under the lock: the in-flight lookup of this consumer's balance (one at a time)."""
        if acct.future is not None and not acct.future.done():
            return acct.future
        acct.future = _executor().submit(self._refresh, meter, consumer_id, acct)
        return acct.future

    def _refresh(self, meter: Meter, consumer_id: str, acct: _Account) -> int | None:
        """In a worker thread: read the balance, then apply it. Usage settled more than the
        delivery lag before the read started is taken to be in the balance now; usage settled
        later stays subtracted (it may be counted twice: a budget errs on the side of refusing)."""
        started = time.monotonic()
        balance = self._read_balance(meter, consumer_id)
        lag = self.lag if self.lag is not None else 2 * meter.settings.flush_interval + 1.0
        with self._lock:
            acct.balance = balance
            recent = acct.recent
            # the gateway's wallet: only usage the reporter had delivered before the read started
            # is in it; usage not delivered yet stays (refused usage: see _refused)
            covered = max((at for at, when in acct.clears if when < started), default=-math.inf)
            while recent:
                when, units = recent[0]
                if when >= started - lag or (self._gateway and when >= covered):
                    break
                acct.spent -= units
                recent.popleft()
            acct.fetched = time.monotonic()
        return balance

    def _clear(self, busy: set[str], read_at: float) -> None:
        """(The reporter, ``Budget.gateway()`` only.) Every consumer not in ``busy`` has nothing
        left to deliver of what the reporter read at ``read_at`` or before: the usage settled
        before then is in the wallet now (or was refused: :meth:`_refused`)."""
        now = time.monotonic()
        with self._lock:
            for consumer_id, acct in self._accounts.items():
                if consumer_id not in busy and acct.recent and (not acct.clears or read_at > acct.clears[-1][0]):
                    acct.clears.append((read_at, now))

    def _refused(self, consumer_id: str, units: int) -> None:
        """(The reporter, ``Budget.gateway()`` only.) The billing API refused ``units`` of this
        consumer's usage for good (HTTP 402, ...): never debited, so subtracted from every balance
        this process reads from now on."""
        with self._lock:
            acct = self._accounts.get(consumer_id)
            if acct is not None:
                acct.spent += units

    def _read_balance(self, meter: Meter, consumer_id: str) -> int | None:
        if self._gateway:
            value = self._gateway_balance(meter, consumer_id)
        else:
            assert self._balance is not None
            value = self._balance(consumer_id)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _SourceError(f"the balance is not a number: {type(value).__name__}")
        return math.floor(value)

    def _gateway_balance(self, meter: Meter, consumer_id: str) -> int | None:
        import httpx

        s = meter.settings
        if s.api_key is None:
            raise _SourceError("Budget.gateway() reads the wallet with the billing API key, and this meter "
                               "has none (init(api_key=...) or AEROSTACK_API_KEY); an app without one "
                               "(e.g. reporting through Redis) wants Budget.from_balance() on a shared store")
        if self._http is None:
            kwargs: dict[str, Any] = {"timeout": httpx.Timeout(self.timeout), "verify": s.verify,
                                      "trust_env": False, "follow_redirects": False}
            if s.transport is not None:
                kwargs["transport"] = s.transport
            self._http = httpx.Client(**kwargs)
        resp = self._http.get(s.base_url + "/gateway/billing/balance", params={"consumerId": consumer_id},
                              headers={"X-Aerostack-Key": s.api_key.reveal()})
        if resp.status_code != 200:
            raise _SourceError(f"the balance read answered HTTP {resp.status_code}")
        data = resp.json()
        if not isinstance(data, dict) or "balance" not in data:
            raise _SourceError("the balance read answered without a balance")
        balance = data["balance"]
        return None if balance is None else int(balance)

    # -- outcomes ------------------------------------------------------------------------------
    def _refuse(self, meter: Meter, consumer_id: str, need: int, remaining: int) -> Reservation | None:
        meter.counters.add("budget_refused")
        raise BudgetExceededError(consumer_id, need, max(remaining, 0), self.unit)

    def _failed(self, meter: Meter, consumer_id: str, need: int, what: str,
                exc: BaseException | None) -> Reservation | None:
        meter.counters.add("budget_errors")
        if what == "unpriced":
            reason = "the call's model has no price, so its worst case is unknown"
        elif isinstance(exc, _SourceError):  # our own words: why, never a key
            reason = f"the budget source failed: {exc}"
            what = f"source:{exc}"  # each distinct reason is said once
        else:  # the source's own exception: its type only (its message may hold a secret)
            reason = f"the budget source failed ({type(exc).__name__ if exc else 'no answer'})"
        if meter.settings.on_budget_error == "closed":
            raise BudgetUnavailableError(
                consumer_id, need, None, self.unit,
                f"aerostack_meter: {reason}; on_budget_error='closed', so the call is refused") from exc
        log_once(f"budget_error:{what}", logging.WARNING,
                 "aerostack_meter: %s; the call goes on unbudgeted (on_budget_error='open')", reason)
        return None

    def _resize(self, res: Reservation, amount: int) -> None:
        with self._lock:
            if not res.done:
                res.account.reserved -= res.amount - amount
                res.amount = amount

    def _close(self, res: Reservation, actual: int) -> None:
        with self._lock:
            if res.done:
                return
            res.done = True
            acct = res.account
            acct.reserved -= res.amount
            acct.spent += actual
            if self.reads_balance and actual:
                if acct.recent is None:
                    acct.recent = deque()
                acct.recent.append((time.monotonic(), actual))

    # -- reading -------------------------------------------------------------------------------
    def remaining(self, consumer_id: str) -> int | None:
        """What the consumer has left now (limit or last balance read, minus spent and reserved);
        ``None`` when unlimited or not read yet."""
        with self._lock:
            acct = self._accounts.get(consumer_id)
            if self.reads_balance:
                if acct is None or acct.balance is None:
                    return None
                return acct.balance - acct.spent - acct.reserved
            limit = self.limits.get(consumer_id, self.default)
            if limit is None:
                return None
            if self.period is not None:
                self._roll(time.time())
            return limit if acct is None else limit - acct.spent - acct.reserved


def _json_body(body: Any) -> dict[str, Any] | None:
    """A request body sent as JSON text or bytes (Bedrock ``invoke_model``), parsed; ``None``
    when it is anything else (a file, not JSON, not an object)."""
    if type(body) not in (str, bytes, bytearray):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if type(parsed) is dict else None


def _settings(kwargs: Mapping[str, Any], keys: tuple[str, ...]) -> Iterator[Any]:
    """The values of ``keys`` (in their order) inside each generation-settings object or dict
    the request has (``_CONFIG_KEYS``); ``None`` values left out."""
    for ck in _CONFIG_KEYS:
        config = kwargs.get(ck)
        if config is None:
            continue
        for k in keys:
            v = config.get(k) if isinstance(config, Mapping) else getattr(config, k, None)
            if v is not None:
                yield v


def _choices(kwargs: Mapping[str, Any]) -> int:
    """How many outputs the request asks for (at least one): the most of ``n``, ``best_of``
    (generated and billed server-side) and a settings object's ``candidate_count``."""
    counts = [v for k in _CHOICE_KEYS if (v := kwargs.get(k)) is not None]
    counts += _settings(kwargs, _NESTED_CHOICE_KEYS)
    return max([1, *(v for v in counts if type(v) is int)])


def _nested_max(kwargs: Mapping[str, Any]) -> int | None:
    """The output cap inside a generation-settings object or dict, if any."""
    return next((v for v in _settings(kwargs, _NESTED_MAX_KEYS) if type(v) is int and v >= 0), None)


def check_budget(value: Any) -> Budget | None:
    """A setting's value as a :class:`Budget` (a plain callable is ``Budget.from_balance``)."""
    if value is None or isinstance(value, Budget):
        return value
    if callable(value):
        return Budget.from_balance(value)
    raise ConfigError("budget", f"must be an aerostack_meter.Budget or a callable consumer_id -> "
                                f"remaining, got {value!r}")
