"""One registry per seam: a tag names a plugin entry (options model, factory, simulator).

Every seam (ASIC firmware, market feed, queue backend, GPU telemetry source,
policy) has one ``Registry``.  A plugin declares its entries in its own module,
as a module attribute ``PLUGINS`` (a tuple of entries):

- built-in plugins are the modules of the seam's packages (``drivers.asic``,
  ``drivers.market``...) that define ``PLUGINS``; they are found by scanning the
  packages, so a new built-in needs its own module and no edit elsewhere;
- third-party plugins are installed packages that name such a module in the
  seam's entry point group (``wattmux.asic_drivers``, ``wattmux.market_feeds``,
  ``wattmux.queue_backends``, ``wattmux.gpu_telemetry``, ``wattmux.policies``)::

      [project.entry-points."wattmux.asic_drivers"]
      avalon = "wattmux_avalon.driver"

  An entry point may also name an entry (``module:attribute``) or a sequence
  of entries instead of a module.

The config schema derives its option fields from the registries
(``Registry.validator``): the ``driver`` key of a table names the entry whose
options model validates it, looked up when the config is validated, so an entry
registered at run time validates too.  A simulator is named by a dotted string
(``"drivers.sim.whatsminer:SimWhatsminer"``) so that drivers never import the
simulators at run time.  A duplicate tag or a plugin that cannot be loaded is a
``PluginError`` with a one-line message naming the seam, the tag and where it
came from.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, PlainValidator

F = TypeVar("F")


class PluginError(Exception):
    """A plugin could not be registered: duplicate tag, broken module or entry point."""


class UnknownTagError(LookupError):
    """No entry of that tag is built in or installed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plugin(Generic[F]):
    """One entry of a seam: its tag, options model, factory and, where one exists, simulator."""

    tag: str
    options: type[BaseModel] | None
    factory: F
    simulator: str | None = None
    """``"module:attribute"`` of the simulator factory; imported only by the simulator."""
    origin: str = field(default="", compare=False)
    """Where the entry was declared (module or entry point), for error messages."""


E = TypeVar("E", bound=Plugin[Any])


def load_simulator(dotted: str) -> Any:
    """Import ``module:attribute`` (a simulator named by an entry)."""
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Registry(Generic[E]):
    """Entries of one seam by tag; built-ins from package scans, others from entry points."""

    def __init__(
        self,
        seam: str,
        group: str,
        kind: type[E],
        packages: Sequence[str] = (),
        *,
        key: str = "driver",
    ) -> None:
        self.seam = seam
        self.group = group
        self.kind = kind
        self.packages = tuple(packages)
        self.key = key
        self._entries: dict[str, E] = {}
        self._loaded = False
        self._loading = False

    # ---- registration -----------------------------------------------------------------

    def register(self, entry: E, origin: str | None = None) -> E:
        """Add one entry; a tag already taken is a PluginError naming both origins."""
        if not isinstance(entry, self.kind):
            raise PluginError(
                f"{self.seam} plugin {origin or entry!r}: expected a {self.kind.__name__}, "
                f"got {type(entry).__name__}"
            )
        if origin is not None and not entry.origin:
            entry = replace(entry, origin=origin)
        taken = self._entries.get(entry.tag)
        if taken is not None:
            if taken == entry:
                return taken
            raise PluginError(
                f"{self.seam} tag {entry.tag!r} of {entry.origin or '?'} is already "
                f"registered by {taken.origin or '?'}"
            )
        self._entries[entry.tag] = entry
        return entry

    def unregister(self, tag: str) -> None:
        """Remove an entry (tests)."""
        self._entries.pop(tag, None)

    def register_module(self, module: ModuleType) -> list[E]:
        """Register the ``PLUGINS`` of a module; a module without them registers nothing."""
        declared = getattr(module, "PLUGINS", None)
        if declared is None:
            return []
        return self._register_all(declared, module.__name__)

    def load_entry_point(self, point: EntryPoint) -> list[E]:
        """Register what one entry point names: a module with PLUGINS, an entry or a sequence."""
        try:
            loaded = point.load()
        except Exception as exc:
            raise PluginError(
                f"{self.seam} plugin {point.name!r} ({point.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return self.register_loaded(point, loaded)

    def register_loaded(self, point: EntryPoint, loaded: object) -> list[E]:
        """Register what an entry point loaded (a registry may accept other forms)."""
        if isinstance(loaded, ModuleType):
            found = self.register_module(loaded)
            if not found:
                raise PluginError(
                    f"{self.seam} plugin {point.name!r}: module {point.value} has no PLUGINS"
                )
            return found
        origin = f"entry point {point.name} = {point.value} ({self.group})"
        return self._register_all(loaded, origin)

    def _register_all(self, declared: object, origin: str) -> list[E]:
        items: Iterable[object] = declared if isinstance(declared, list | tuple) else (declared,)
        out = []
        for item in items:
            if not isinstance(item, self.kind):
                raise PluginError(
                    f"{self.seam} plugin {origin}: expected a {self.kind.__name__}, "
                    f"got {type(item).__name__}"
                )
            out.append(self.register(item, origin))
        return out

    # ---- loading ----------------------------------------------------------------------

    def load(self) -> None:
        """Scan the built-in packages, then the entry points (once)."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for package_name in self.packages:
                package = importlib.import_module(package_name)
                for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                    if info.name.startswith("_"):
                        continue
                    module = importlib.import_module(f"{package_name}.{info.name}")
                    self.register_module(module)
            for point in entry_points(group=self.group):
                self.load_entry_point(point)
            self._loaded = True
        finally:
            self._loading = False

    # ---- reading ----------------------------------------------------------------------

    def entries(self) -> list[E]:
        """Every entry, built-ins first (in module order), then installed ones."""
        self.load()
        return list(self._entries.values())

    def tags(self) -> tuple[str, ...]:
        """Every tag."""
        return tuple(entry.tag for entry in self.entries())

    def get(self, tag: str) -> E:
        """The entry of a tag, or UnknownTagError listing the known tags."""
        self.load()
        try:
            return self._entries[tag]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnknownTagError(f"unknown {self.seam} {tag!r}; known: {known}") from None

    def __contains__(self, tag: object) -> bool:
        self.load()
        return tag in self._entries

    def validate_options(self, value: Any, default: str | None = None) -> BaseModel:
        """Validate one options table with the model of the entry its ``key`` names.

        Field errors keep their path under the table (no tag in between), the same
        for every entry; an unknown or missing tag is an error at the table itself.
        """
        if isinstance(value, BaseModel):
            tag = getattr(value, self.key, None)
            if isinstance(tag, str) and tag in self and isinstance(value, self._model(tag)):
                return value
            value = value.model_dump()
        if not isinstance(value, dict):
            raise ValueError(f"expected a table of {self.seam} settings")
        tag = value.get(self.key, default)
        if not isinstance(tag, str):
            raise ValueError(f"{self.key} is missing; known: {', '.join(self.tags())}")
        if tag not in self:
            raise ValueError(f"unknown {self.key} {tag!r}; known: {', '.join(self.tags())}")
        return self._model(tag).model_validate(value)

    def _model(self, tag: str) -> type[BaseModel]:
        model = self.get(tag).options
        if model is None:
            raise ValueError(f"{self.seam} {tag!r} takes no settings")
        return model

    def validator(self, default: str | None = None) -> PlainValidator:
        """Pydantic validator of a config field holding this seam's options.

        Use as ``Annotated[SettingsProtocol, registry.validator()]``: the entry is
        looked up when the config is validated, so an entry registered at run time
        validates too; the value dumps as its entry's model.
        """

        def validate(value: Any) -> BaseModel:
            return self.validate_options(value, default)

        return PlainValidator(validate)
