"""The floor of metering at the Stainless HTTP layer, for the overhead benchmarks: what any meter
pays at the place ours sits, doing the least a meter can."""

from __future__ import annotations

import inspect
from typing import Any

FLOORED = {"openai", "aopenai", "anthropic", "aanthropic"}  # the clients the floor applies to


class Floor:
    """The floor any meter pays at the same place: a hook on the SDK's own ``_process_response``
    (where ours sits, OpenAI's and Anthropic's Stainless clients) that reads the response's two
    token counts into a list, and nothing else: no attribution, no record, no journal."""

    def __init__(self) -> None:
        import anthropic._base_client as anthropic_base
        import openai._base_client as openai_base

        self.counts: list[tuple[int, int]] = []
        self.reads = 0  # responses whose counts were read (a floor that read nothing measures nothing)
        self.classes = [cls for mod in (openai_base, anthropic_base)
                        for cls in (mod.SyncAPIClient, mod.AsyncAPIClient)]
        self.installed: list[tuple[type, Any, Any]] = []  # (class, what was there, the floor's hook)

    def _read(self, response: Any) -> None:
        u = getattr(response, "usage", None)
        if u is not None:
            d = u.__dict__
            self.counts.append((d.get("input_tokens") or d.get("prompt_tokens") or 0,
                                d.get("output_tokens") or d.get("completion_tokens") or 0))
            if len(self.counts) > 4096:
                self.reads += len(self.counts)
                self.counts.clear()

    @property
    def read_so_far(self) -> int:
        return self.reads + len(self.counts)

    def hook(self, orig: Any, is_async: bool) -> Any:
        """The floor's ``_process_response``: ``orig`` (the SDK's), then the two counts read."""
        read = self._read
        if is_async:
            async def hook(client: Any, *a: Any, **k: Any) -> Any:
                r = await orig(client, *a, **k)
                read(r)
                return r
            return hook

        def sync_hook(client: Any, *a: Any, **k: Any) -> Any:
            r = orig(client, *a, **k)
            read(r)
            return r
        return sync_hook

    def on(self) -> None:
        """Hook each class over whatever its ``_process_response`` is now (the SDK's own, or ours
        left installed but inactive by a ``wrap()`` proxy: then the bare blocks have it too)."""
        for cls in self.classes:
            orig = cls.__dict__["_process_response"]
            hook = self.hook(orig, "Async" in cls.__name__)
            cls._process_response = hook
            self.installed.append((cls, orig, hook))

    def twin_class(self, twin: type) -> type:
        """A subclass of a bare twin's class (``_bare.Twins``) whose ``_process_response`` is the
        floor's over the SDK's own: the floor while ``instrument()`` is on."""
        orig = twin._process_response  # type: ignore[attr-defined]
        return type("Floor" + twin.__name__, (twin,), {
            "_process_response": self.hook(orig, inspect.iscoroutinefunction(orig))})

    def off(self) -> None:
        """Put back what ``on()`` found, where the floor's hook is still the class's method."""
        for cls, orig, hook in self.installed:
            if cls.__dict__.get("_process_response") is hook:
                cls._process_response = orig
        self.installed.clear()
