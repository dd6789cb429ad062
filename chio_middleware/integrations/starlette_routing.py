"""Starlette and FastAPI: the app's own router decides which route a request is.

:func:`native_route` walks the app's routes exactly as ``starlette.routing.Router.app``
dispatches (the first full match wins, then the first partial match, which answers 405,
then the slash redirect), descending into mounts and hosts, with Starlette's own
``Route.matches``, so the converters, mounts and slash rules are the framework's. The
route pattern checked is the full template of the route whose endpoint will run, and the
path parameters are the converted values that endpoint receives (PROTOCOL.md 5.1).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import email.message
import enum
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, RootModel
from starlette.routing import BaseRoute, Host, Match, Mount

from ..core.canonical import canonical_json
from ._declare import (
    Conflict,
    NativeRoute,
    Public,
    ToolDeclaration,
    declaration_of,
    one_declaration,
    wrapped_apps,
)

__all__ = ["endpoint_declaration", "find_router", "native_route", "router_of", "stack_contains"]

Scope = MutableMapping[str, Any]
_MAX_DEPTH = 16


def router_of(app: Any) -> Any | None:
    """The router of a Starlette or FastAPI app (or the router itself), else ``None``."""
    router = getattr(app, "router", app)
    return router if isinstance(getattr(router, "routes", None), list) else None


def find_router(app: Any) -> Any | None:
    """The router of ``app`` or of the app it wraps (``.app`` links of ASGI middleware,
    e.g. a ``Mount(middleware=...)`` or ``ProxyHeadersMiddleware(app)``), else ``None``."""
    for node in wrapped_apps(app):
        router = router_of(node)
        if router is not None:
            return router
    return None


def stack_contains(app: Any, middleware: object) -> bool:
    """True when ``middleware`` sits in ``app``'s built middleware stack (``.app`` links)."""
    stack = getattr(app, "middleware_stack", None)
    return any(node is middleware for node in wrapped_apps(stack))


def native_route(router: Any, scope: Scope) -> NativeRoute:
    """What ``router`` does with the HTTP request ``scope`` (the scope is not changed).

    ``trail`` names each router walked and the scope it dispatches on, for the check at
    each router's entry (:mod:`.dispatch`).
    """
    trail: list[tuple[Any, Any]] = []
    native = _walk(router, dict(scope), "", 0, trail)
    # Set on the object just made (every outcome is a new NativeRoute): replace() would
    # copy every field again, on every request.
    object.__setattr__(native, "trail", tuple(trail))
    return native


def _walk(
    router: Any, scope: dict[str, Any], prefix: str, depth: int, trail: list[tuple[Any, Any]]
) -> NativeRoute:
    if depth > _MAX_DEPTH:
        return NativeRoute("opaque")
    trail.append((router, scope))
    routes: Iterable[BaseRoute] = router.routes
    partial: BaseRoute | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            if _is_included_router(route):
                return _included(route, scope, prefix, depth, trail)
            return _full(route, {**scope, **child}, prefix, depth, trail)
        if match is Match.PARTIAL and partial is None:
            partial = route
    if partial is not None:
        return NativeRoute("method_not_allowed", pattern=prefix + _path_of(partial))
    if getattr(router, "redirect_slashes", False) and _redirects(router, scope):
        return NativeRoute("redirect")
    return NativeRoute("not_found")


def _is_included_router(route: Any) -> bool:
    """FastAPI's ``include_router`` entry (0.16x): a route that routes with its own router."""
    return callable(getattr(route, "_match", None)) and not hasattr(route, "endpoint")


def _included(
    route: Any, scope: dict[str, Any], prefix: str, depth: int, trail: list[tuple[Any, Any]]
) -> NativeRoute:
    """Descend into a FastAPI included router with FastAPI's own ``_match``."""
    if depth > _MAX_DEPTH:
        return NativeRoute("uninspectable")
    match, child, inner, context = route._match(scope)
    if match is Match.NONE or inner is None:
        return NativeRoute("not_found")
    merged = {**scope, **child}
    if _is_included_router(inner):
        return _included(inner, merged, prefix, depth + 1, trail)
    target = context if context is not None else inner
    pattern = prefix + str(getattr(target, "path", None) or _path_of(inner))
    if match is Match.PARTIAL:
        return NativeRoute("method_not_allowed", pattern=pattern)
    if isinstance(inner, Mount | Host):
        return _full(inner, merged, prefix, depth + 1, trail)
    return _matched(target, merged, pattern)


def _full(
    route: BaseRoute, scope: dict[str, Any], prefix: str, depth: int, trail: list[tuple[Any, Any]]
) -> NativeRoute:
    if isinstance(route, Mount | Host):
        inner = find_router(route.app)
        if inner is None:  # a mounted app of another kind (static files, WSGI, ...)
            return NativeRoute("opaque", pattern=prefix + _path_of(route))
        return _walk(inner, scope, prefix + _path_of(route), depth + 1, trail)
    if not hasattr(route, "endpoint"):  # a route class whose target cannot be inspected
        return NativeRoute("uninspectable", pattern=prefix + _path_of(route))
    return _matched(route, scope, prefix + _path_of(route))


def _matched(route: Any, scope: dict[str, Any], pattern: str) -> NativeRoute:
    """The route whose endpoint runs, with what FastAPI will hand that endpoint."""
    params = dict(scope.get("path_params", {}))
    try:
        facts = _facts_of(route)
        method = scope.get("method", "GET")
        declaration = facts.declarations.get(method, _MISSING)
        if declaration is _MISSING:
            declaration = endpoint_declaration(route, method, facts.override_marks)
            if len(facts.declarations) < 16:  # a route of any method: the client's texts
                facts.declarations[method] = declaration
        arguments = params
        rewritten = _fastapi_rewrites(facts.rewrite_fields, params, scope)
        if facts.argument_fields:
            found, collisions = _fastapi_header_arguments(facts, scope)
            arguments = {**params, **found}
            rewritten.extend(collisions)
            rewritten.extend(k for k, v in found.items() if k in params and _differ(params[k], v))
        return NativeRoute(
            "matched",
            pattern=pattern,
            params=arguments,
            declaration=declaration,
            rewritten=rewritten,
            raw_body=_fastapi_raw_body(facts, scope),
            header_names=facts.header_names,
            body_check=facts.body_check,
        )
    except Uninspectable:
        return NativeRoute("uninspectable", pattern=pattern)


class _RouteFacts:
    """What a route's FastAPI dependency tree reads, derived once per route (the walk of
    the tree, the fields each check validates, the body check, the declarations by
    method) instead of on every request. Built from the tree FastAPI solves: with
    ``dependency_overrides`` set, the overriding dependencies' (:func:`_dependants`)."""

    __slots__ = (
        "argument_fields",
        "body_check",
        "body_kind",
        "declarations",
        "header_names",
        "override_marks",
        "rewrite_fields",
    )

    def __init__(self, route: Any, overrides: Any) -> None:
        dependant = getattr(route, "dependant", None)
        nodes = [] if dependant is None else _dependants(dependant, overrides)
        #: The declarations on the overriding dependencies (they join the route's own:
        #: an override declared as another tool is a conflict, refused; found by an
        #: outside review: a public route overridden by a declared tool ran unchecked).
        self.override_marks: list[ToolDeclaration | Public] = []
        if overrides:
            for node in nodes[1:]:
                mark = declaration_of(getattr(node, "call", None))
                if mark is not None:
                    self.override_marks.append(mark)
        #: (Header() fields, Cookie() fields) of every node: their values are arguments.
        headers = [f for node in nodes for f in getattr(node, "header_params", ())]
        cookies = [f for node in nodes for f in getattr(node, "cookie_params", ())]
        self.argument_fields: tuple[list[Any], list[Any]] | None = (
            (headers, cookies) if headers or cookies else None
        )
        self.rewrite_fields = _rewrite_fields(nodes)
        self.header_names = _fastapi_header_names(nodes)
        self.body_check = _fastapi_body_check(route, nodes)
        self.body_kind = _body_kind(route)
        self.declarations: dict[str, Any] = {}


#: id(route) -> (a weak reference to the route, what the facts were derived from
#: (:func:`_fingerprint`), the facts). The entry goes when the route does, so an id is not reused
#: while its entry stands (and no app is kept alive by it).
_FACTS: dict[int, tuple[Any, tuple[Any, ...], _RouteFacts]] = {}
_MAX_FACTS = 4096


def _facts_of(route: Any) -> _RouteFacts:
    provider = getattr(route, "dependency_overrides_provider", None)
    overrides = getattr(provider, "dependency_overrides", None)
    if overrides:  # set and cleared at will (tests, mostly): derived on every request
        return _RouteFacts(route, overrides)
    fingerprint = _fingerprint(route)
    key = id(route)
    entry = _FACTS.get(key)
    fresh = entry is not None and fingerprint and entry[0]() is route
    if fresh and _same_objects(fingerprint, entry[1]):  # type: ignore[index]
        return entry[2]  # type: ignore[index]
    facts = _RouteFacts(route, None)
    if len(_FACTS) >= _MAX_FACTS:  # routes made at run time: never an unbounded table
        _FACTS.clear()
    try:
        reference = weakref.ref(route, lambda _: _FACTS.pop(key, None))
    except TypeError:  # a route class with __slots__ and no __weakref__: not kept
        return facts
    _FACTS[key] = (reference, fingerprint, facts)
    return facts


def _fingerprint(route: Any) -> tuple[Any, ...]:
    """What a route's facts are derived from: its endpoint and each node of its dependency
    tree with its call, the number of its sub-dependencies and its parameter fields. A
    tree edited in place since (``route.dependant.dependencies.append(...)``, which
    FastAPI honours on the next request; found by an outside review) gives another
    fingerprint, so new facts. Compared by identity (:func:`_same_objects`)."""
    found: list[Any] = [getattr(route, "endpoint", None)]
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if dependant is not None else []
    while pending:
        node = pending.pop()
        if len(found) > 64 * _MAX_DEPENDANTS:  # past what _dependants admits: refused there
            return ()
        subs = getattr(node, "dependencies", ())
        found += (node, getattr(node, "call", None), len(subs))
        for attribute in _PARAM_LISTS:
            found += getattr(node, attribute, ())
            found.append(attribute)
        pending.extend(subs)
    return tuple(found)


def _same_objects(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """True when ``a`` and ``b`` hold the same objects, in order (the entry keeps ``b``'s
    alive, so an id in it is not reused)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


_PARAM_LISTS = ("path_params", "query_params", "header_params", "cookie_params", "body_params")


def _path_of(route: BaseRoute) -> str:
    return str(getattr(route, "path", ""))


def _redirects(router: Any, scope: dict[str, Any]) -> bool:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if path == "/" or path == root_path or path == root_path + "/":
        return False
    toggled = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
    return any(route.matches(toggled)[0] is not Match.NONE for route in router.routes)


def _fastapi_rewrites(
    fields: list[tuple[Any, str]], params: dict[str, Any], scope: Scope
) -> list[str]:
    """FastAPI path and query parameters whose typed value is not the text checked.

    FastAPI validates ``id: int`` from ``"7 "`` or ``"+7"`` to ``7`` and ``flag: bool`` from
    ``"yes"`` to ``True`` after the router, so the handler reads another value than the
    constraints saw (found by the differential suite). Every path and query parameter of
    the route and of its dependencies (an outside review found those skipped), a query
    parameter model's fields and list items included, is validated with FastAPI's own
    ``request_params_to_args``; where the raw text is not the canonical text of the value
    the handler gets (:func:`_same_text`), the request is refused. ``fields``: those
    parameters, each with where it is read from (:func:`_rewrite_fields`).
    """
    if not fields:
        return []
    from fastapi.dependencies.utils import request_params_to_args
    from starlette.datastructures import QueryParams

    received_by_kind = {
        "path": {k: str(v) for k, v in params.items()},
        "query": QueryParams(scope.get("query_string", b"")),
    }
    problems: list[str] = []
    for field, kind in fields:
        received = received_by_kind[kind]
        if not _may_differ(field, received):
            continue
        values, errors = request_params_to_args([field], received)
        if errors or not values:
            continue  # FastAPI answers 422 itself; no handler runs
        value = next(iter(values.values()))
        problems.extend(_rewritten(field, value, received))
    return problems


def _rewrite_fields(nodes: list[Any]) -> list[tuple[Any, str]]:
    """The path and query parameters of ``nodes`` whose value may not be their text: a
    plain ``str`` parameter (no validators, no model) is the text itself."""
    found: list[tuple[Any, str]] = []
    for node in nodes:
        for kind, attribute in (("path", "path_params"), ("query", "query_params")):
            for field in getattr(node, attribute, ()):
                info = getattr(field, "field_info", None)
                if getattr(info, "annotation", None) is str and not getattr(info, "metadata", None):
                    continue
                found.append((field, kind))
    return found


class Uninspectable(Exception):
    """A FastAPI route whose inputs cannot be told: refused as uninspectable."""


class TooManyDependencies(Uninspectable):
    """A FastAPI route whose dependency tree is past what the resolver walks: refused."""


_MAX_DEPENDANTS = 1024


def _dependants(dependant: Any, overrides: Any = None) -> list[Any]:
    """The dependant and its sub-dependencies, each once; past ``_MAX_DEPENDANTS`` nodes
    (FastAPI makes one per use of a shared dependency) ``TooManyDependencies``, never a
    silent cut (found by an outside review).

    With ``overrides`` (an app's ``dependency_overrides``), a sub-dependency whose call is
    overridden is the dependant FastAPI's ``solve_dependencies`` builds for the override,
    at any depth: that is the function that runs and the parameters it reads.
    """
    found: list[Any] = []
    seen: set[int] = set()
    pending = [dependant]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        if len(found) >= _MAX_DEPENDANTS:
            raise TooManyDependencies
        seen.add(id(node))
        found.append(node)
        subs = getattr(node, "dependencies", ())
        if overrides:
            subs = [_overridden(sub, overrides) for sub in subs]
        pending.extend(subs)
    return found


def _overridden(sub: Any, overrides: Any) -> Any:
    """The dependant FastAPI solves in place of ``sub`` (its own unless overridden)."""
    call = getattr(sub, "call", None)
    try:
        replacement = overrides.get(call, call)
    except TypeError:  # an unhashable call: FastAPI's own look-up fails the request too
        raise Uninspectable from None
    if replacement is call:
        return sub
    from fastapi.dependencies.utils import get_dependant

    try:  # the parameters a dependant reads follow from its call and path alone
        return get_dependant(path=sub.path, call=replacement, name=sub.name)
    except Exception:  # FastAPI fails that request too; nothing is inspected
        raise Uninspectable from None


def _may_differ(field: Any, received: Any) -> bool:
    """False when the request does not send the parameter (its default is used); a plain
    ``str`` parameter is left out before (:func:`_rewrite_fields`)."""
    from fastapi.dependencies import utils

    if utils._get_param_model(field) is not None:
        return True  # a Query() model reads its fields' names, not its own
    return _request_name(utils, field, received) in received


def _rewritten(field: Any, value: Any, received: Any) -> list[str]:
    """The names under which the client's text is not the value the handler reads."""
    from fastapi.dependencies import utils

    if isinstance(value, BaseModel):  # a Query() model: each of its fields
        names: list[str] = []
        for sub in utils.get_cached_model_fields(type(value)):  # type: ignore[attr-defined]
            name = _request_name(utils, sub, received)
            if name in received and not _same_text(_raw(received, name), getattr(value, sub.name)):
                names.append(name)
        return names
    name = _request_name(utils, field, received)
    if name not in received:
        return []
    return [] if _same_text(_raw(received, name), value) else [name]


def _request_name(utils: Any, field: Any, received: Any) -> str:
    """The key FastAPI reads ``field`` from (its first alias the request holds)."""
    aliases = utils._get_param_aliases(field)
    return str(next((pair for pair in aliases if pair[1] in received), aliases[0])[1])


def _raw(received: Any, name: str) -> Any:
    values = received.getlist(name) if hasattr(received, "getlist") else [received[name]]
    return values[0] if len(values) == 1 else values


def _same_text(raw: Any, value: Any) -> bool:
    """True when ``value`` is what the text ``raw`` (or list of texts) says, exactly."""
    return bool(_same(raw, value))


def _same(raw: Any, value: Any) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        items = raw if isinstance(raw, list) else [raw]
        if isinstance(value, set | frozenset) or len(items) != len(value):
            return False
        return all(_same(text, item) for text, item in zip(items, value, strict=True))
    if isinstance(raw, list):
        return False
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return raw == ("true" if value else "false")
    if isinstance(value, int | float):
        return raw == canonical_json(value).decode("ascii")
    if isinstance(value, str):
        return raw == value
    if isinstance(value, datetime.date | datetime.time):
        try:  # the ISO forms Python reads back to this value (a Z offset included)
            return raw == value.isoformat() or type(value).fromisoformat(raw) == value
        except (TypeError, ValueError):
            return False
    if isinstance(value, uuid.UUID | decimal.Decimal | PurePath):
        return raw == str(value)
    return False  # a type whose text cannot be compared: refused, never skipped


_MISSING = object()


def _fastapi_body_check(route: Any, nodes: list[Any]) -> Callable[[Any, bool], list[str]] | None:
    """For a FastAPI route with body parameters: which members of a body (the JSON
    object's, or the form's fields) the handler reads as another value than the one
    checked (``amount: float`` from ``"1e9"``; found by an outside review). FastAPI's own
    ``request_body_to_args`` validates them, dependant by dependant as its
    ``solve_dependencies`` does (``nodes``, :func:`_dependants`); :func:`_same_json`
    compares each value."""
    if getattr(route, "dependant", None) is None:
        return None
    from fastapi.dependencies import utils

    groups = [list(node.body_params) for node in nodes if getattr(node, "body_params", None)]
    if not groups:
        return None
    embed = getattr(route, "_embed_body_fields", None)  # FastAPI 0.113 and later
    if embed is None:  # before: one body parameter in all is the body, more are embedded
        embed = sum(len(group) for group in groups) > 1
    # Per dependant, as request_body_to_args decides: the whole body for one field that
    # is not embedded (by the route, by itself, or as a form model), else each field by
    # the first of its request names the body holds (AliasChoices included; found by an
    # outside review: only the first choice was compared, and an embedded lone field was
    # compared with the whole body).
    form_models = getattr(utils, "_get_form_models", None)
    plan = []
    for group in groups:
        whole = _whole_body(utils, group, bool(embed))
        # A form model is read from the whole form, whatever else the dependant reads.
        members = [
            (f, _body_aliases(utils, f), whole, bool(form_models and form_models(f)))
            for f in group
        ]
        plan.append((group, members))

    def check(body: Any, form: bool) -> list[str]:
        from fastapi.dependencies.utils import request_body_to_args
        from starlette.datastructures import FormData

        received = FormData(list(body.items())) if form else body
        names: list[str] = []
        for fields, members in plan:
            coroutine = request_body_to_args(fields, received, bool(embed))
            try:  # it awaits nothing for a mapping (only form files are read asynchronously)
                coroutine.send(None)
            except StopIteration as done:
                values, errors = done.value
            else:
                coroutine.close()
                return ["body"]  # cannot be validated here: refused where checks apply
            if errors:
                continue  # FastAPI answers 422 itself; no handler runs
            for field, keys, whole, form_model in members:
                value = values.get(field.name)
                if form_model and form:
                    if value is None:  # not supplied (a form cannot send null): the default
                        continue
                    whole = True
                present = keys[:1] if whole else [key for key in keys if key in body]
                if not present:
                    continue  # the request does not send it: its default stands
                alias = present[0]
                raw = body if whole else body[alias]
                if not _same_json(raw, value, 0, form):
                    names.append(alias)
        return names

    return check


def _whole_body(utils: Any, fields: list[Any], embed: bool) -> bool:
    """FastAPI's ``single_not_embedded_field``: the one field that is the whole body."""
    if len(fields) != 1 or embed:
        return False
    should_embed = getattr(utils, "_should_embed_body_fields", None)
    if should_embed is not None:
        if should_embed(fields):
            return False
    elif getattr(fields[0].field_info, "embed", None):  # before 0.113
        return False
    form_models = getattr(utils, "_get_form_models", None)
    return not (form_models is not None and form_models(fields[0]))


def _body_aliases(utils: Any, field: Any) -> list[str]:
    """The keys FastAPI reads a body field from, in its order of preference."""
    aliases = getattr(utils, "_get_param_aliases", None)
    if aliases is not None:
        return [str(alias) for alias, _ in aliases(field)]
    return [str(utils.get_validation_alias(field) or field.name)]


def _same_json(raw: Any, value: Any, depth: int, form: bool = False) -> bool:
    """True when the typed ``value`` is exactly the JSON ``raw`` (``form``: the form's
    texts, compared by :func:`_same_text`)."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, RootModel):  # its one member is the value itself
        return _same_json(raw, value.root, depth + 1, form)
    if isinstance(value, BaseModel) or dataclasses.is_dataclass(value):
        if not isinstance(raw, dict):
            return False
        for name, key in _member_keys(value, raw):
            if key is None:
                return False  # an alias path, or choices: not compared, refused
            if key in raw and not _same_json(raw[key], getattr(value, name), depth + 1, form):
                return False
        return True
    if form:
        return isinstance(raw, str) and _same_text(raw, value)
    if isinstance(value, dict):
        return isinstance(raw, dict) and all(
            k in raw and _same_json(raw[k], v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return (
            isinstance(raw, list)
            and len(raw) == len(value)
            and all(_same_json(r, v, depth + 1) for r, v in zip(raw, value, strict=True))
        )
    if isinstance(value, set | frozenset):  # from a JSON array of the same distinct items
        return (
            isinstance(raw, list)
            and len(raw) == len(value)
            and all(type(r) in (str, int, bool) and r in value for r in raw)
        )
    if isinstance(value, decimal.Decimal) and type(raw) in (int, float):
        return decimal.Decimal(str(raw)) == value
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool):
        return raw is value
    if isinstance(value, int):
        return type(raw) is int and raw == value
    if isinstance(value, float):
        return type(raw) in (int, float) and raw == value
    if isinstance(value, str):
        return type(raw) is str and raw == value
    return isinstance(raw, str) and _same_text(raw, value)  # UUID, Decimal, dates: text


def _member_keys(value: Any, raw: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """Each field of a model or dataclass and the key of ``raw`` it was read from (``None``
    when the key cannot be told: an ``AliasPath``, or ``AliasChoices`` none of which is in
    ``raw`` while a default stands)."""
    for name, alias in _member_specs(type(value)):
        if alias is None or isinstance(alias, str):
            yield name, name if alias is None else alias if alias in raw else name
        elif alias is _UNTOLD:
            yield name, None
        else:  # AliasChoices of strings: pydantic takes the first choice present
            yield name, next((str(choice) for choice in alias if choice in raw), name)


#: An alias whose key in the input cannot be told (``AliasPath``, choices of paths).
_UNTOLD = object()
#: class -> its fields, each with its alias: ``None``, a key, a tuple of choices, _UNTOLD.
_MEMBER_SPECS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _member_specs(cls: type) -> tuple[tuple[str, Any], ...]:
    """The fields of a model or dataclass class and how each is keyed (once per class)."""
    specs = _MEMBER_SPECS.get(cls)
    if specs is not None:
        return specs
    from pydantic import AliasChoices

    found: list[tuple[str, Any]] = []
    infos = getattr(cls, "__pydantic_fields__", None)  # models and pydantic dataclasses
    if infos is None and not dataclasses.is_dataclass(cls):
        infos = cls.model_fields  # type: ignore[attr-defined]  # pydantic before 2.10
    if infos is None:
        found = [(field.name, None) for field in dataclasses.fields(cls)]
    else:
        for name, info in (infos or {}).items():
            alias = info.validation_alias if info.validation_alias is not None else info.alias
            if alias is None or isinstance(alias, str):
                found.append((name, alias))
            elif isinstance(alias, AliasChoices) and all(
                isinstance(choice, str) for choice in alias.choices
            ):
                found.append((name, tuple(alias.choices)))
            else:
                found.append((name, _UNTOLD))
    if len(_MEMBER_SPECS) >= 4096:  # classes made at run time: never an unbounded table
        _MEMBER_SPECS.clear()
    specs = _MEMBER_SPECS[cls] = tuple(found)
    return specs


def _body_kind(route: Any) -> str | None:
    """How FastAPI reads this route's body: ``None`` (no body field, or a form: never more
    than the argument view read), ``"strict"`` (JSON by its Content-Type; bytes without
    one), ``"lax"`` (JSON by its Content-Type or without one). See :func:`_fastapi_raw_body`."""
    body_field = getattr(route, "body_field", None)
    if body_field is None or not hasattr(route, "dependant"):
        return None
    from fastapi import params as fastapi_params

    if isinstance(getattr(body_field, "field_info", None), fastapi_params.Form):
        return None
    strict = getattr(route, "strict_content_type", False)  # before 0.12x: JSON
    return "strict" if getattr(strict, "value", strict) else "lax"


def _fastapi_raw_body(facts: _RouteFacts, scope: Scope) -> str | None:
    """Why FastAPI will hand this route's body field the raw bytes, or ``None``.

    FastAPI's request handler decodes the body as JSON only when the Content-Type is
    ``application/json`` or ``application/*+json`` (parsed by ``email.message``, as it
    does), or absent when the route's ``strict_content_type`` is off; otherwise a body field
    gets the bytes (a single ``str`` or ``bytes`` ``Body()`` takes them whole). The argument
    view would have read a JSON object's members the handler never sees (found by an
    outside review: a path under /workspace/ checked, the whole text written to).
    """
    if facts.body_kind is None:
        return None
    from starlette.datastructures import Headers

    content_type = Headers(scope=scope).get("content-type")
    if not content_type:
        if facts.body_kind == "lax":
            return None
        return "body without a Content-Type (FastAPI hands it over as bytes)"
    json_type = _JSON_TYPES.get(content_type)
    if json_type is None:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        json_type = message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        )
        if len(_JSON_TYPES) >= 256:  # the client's texts: a bounded memo
            _JSON_TYPES.clear()
        _JSON_TYPES[content_type] = json_type
    return None if json_type else "non-JSON body (FastAPI hands it over as bytes)"


#: Content-Type text -> whether FastAPI reads the body as JSON under it (email.message's
#: parse of it takes longer than the rest of this check).
_JSON_TYPES: dict[str, bool] = {}


def _fastapi_header_names(nodes: list[Any]) -> tuple[str, ...]:
    """The request headers a FastAPI route's ``Header()`` parameters read, lowercase (both
    spellings of a name whose underscores FastAPI may convert)."""
    if not nodes:
        return ()
    from fastapi.dependencies import utils

    names: set[str] = set()
    for node in nodes:
        for field in getattr(node, "header_params", ()):
            model = utils._get_param_model(field)
            subs = utils.get_cached_model_fields(model) if model is not None else [field]  # type: ignore[attr-defined]
            for sub in subs:
                read = {str(getattr(sub, "alias", None) or getattr(sub, "name", ""))}
                aliases = getattr(utils, "_get_param_aliases", None)
                if aliases is not None:  # every AliasChoices name, the field's own name
                    read.update(key for pair in aliases(sub) for key in pair)
                for alias in read:  # (found by an outside review: first alias only)
                    alias = alias.lower()
                    names.update((alias, alias.replace("_", "-")))
    return tuple(sorted(names))


def sub_routers(router: Any, depth: int = 0) -> Iterator[Any]:
    """``router`` and every router the walk can descend into (mounts, hosts, sub-apps)."""
    if depth > _MAX_DEPTH:
        return
    yield router
    for route in getattr(router, "routes", ()):
        candidates: list[Any] = [route]
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts) and not hasattr(route, "endpoint"):
            candidates = [getattr(c, "starlette_route", c) for c in contexts()]
        for candidate in candidates:
            if isinstance(candidate, Mount | Host):
                inner = find_router(candidate.app)
                if inner is not None:
                    yield from sub_routers(inner, depth + 1)


def _fastapi_header_arguments(facts: _RouteFacts, scope: Scope) -> tuple[dict[str, Any], list[str]]:
    """The values of a FastAPI route's ``Header()`` and ``Cookie()`` parameters, and the
    names two of them give different values (refused where checks apply, as a rewritten
    value is).

    They are handler inputs like query parameters (found by the outside review): they
    join the arguments under the parameter's name, as FastAPI validates them, so the
    constraints and guards see them (a name also given elsewhere is refused, 400). Two
    parameters of one name (a header in one dependency, a cookie in another) would leave
    one value unchecked (found by an outside review).
    """
    assert facts.argument_fields is not None
    headers_fields, cookie_fields = facts.argument_fields
    from fastapi.dependencies.utils import request_params_to_args
    from starlette.datastructures import Headers
    from starlette.requests import cookie_parser

    headers = Headers(scope=scope)
    found: dict[str, Any] = {}
    collisions: list[str] = []
    for fields, received in (
        (headers_fields, headers),
        (cookie_fields, cookie_parser(headers.get("cookie", ""))),
    ):
        for field in fields:
            values, errors = request_params_to_args([field], received)
            if errors:
                continue
            for name, value in values.items():
                if value is None:
                    continue
                if name in found and _differ(found[name], value):
                    collisions.append(name)
                found[name] = value
    return found, collisions


def _differ(a: Any, b: Any) -> bool:
    """Whether two inputs of one name differ: in value or in type (``True == 1``, yet a
    check of one spelling does not speak for the other); a one-item list is its item."""
    a = a[0] if isinstance(a, list) and len(a) == 1 else a
    b = b[0] if isinstance(b, list) and len(b) == 1 else b
    return type(a) is not type(b) or a != b


def endpoint_declaration(
    route: BaseRoute, method: str, overriding: Iterable[ToolDeclaration | Public] = ()
) -> ToolDeclaration | Public | Conflict | None:
    """The ``@chio.tool``/``@chio.public`` mark of a route's endpoint, if any.

    The mark on a class-based endpoint's method handler, else on the endpoint, wins.
    Otherwise every FastAPI dependency of the route counts (its ``APIRouter``'s and its
    own, and theirs): one declaration, however often it is given, is the route's; two
    that disagree are a :class:`Conflict`, refused (found by an outside review: the
    router's tool was taken and the route's own ``nonce=True`` tool ignored).
    """
    endpoint = getattr(route, "endpoint", None)
    handler = None
    if isinstance(endpoint, type):  # HTTPEndpoint: HEAD runs get() when there is no head()
        handler = getattr(endpoint, method.lower(), None)
        if handler is None and method.upper() == "HEAD":
            handler = getattr(endpoint, "get", None)
    found = declaration_of(handler, endpoint)
    if found is not None:  # an override's own declaration still counts (review: public
        return one_declaration([found, *overriding])  # endpoint, tool override, ran open)
    declared: list[ToolDeclaration | Public] = []
    for dependency in getattr(route, "dependencies", ()):
        mark = declaration_of(getattr(dependency, "dependency", None))
        if mark is not None:
            declared.append(mark)
    _from_dependant(getattr(route, "dependant", None), 0, declared)
    declared.extend(overriding)  # the declarations of dependencies overriding others
    return one_declaration(declared)


def _from_dependant(dependant: Any, depth: int, declared: list[ToolDeclaration | Public]) -> None:
    if dependant is None or depth > _MAX_DEPTH:
        return
    for sub in getattr(dependant, "dependencies", ()):
        mark = declaration_of(getattr(sub, "call", None))
        if mark is not None:
            declared.append(mark)
        _from_dependant(sub, depth + 1, declared)
