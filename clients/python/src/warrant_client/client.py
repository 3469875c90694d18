"""The clients: `Client` (blocking) and `AsyncClient` (asyncio), each with `check`,
`batch_check`, `guard` and the `requires` decorator. Every call has a deadline; UNAVAILABLE is
retried within it (with backoff), nothing else is; whatever goes wrong comes back as a deny."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from warrant_client._decision import (
    MALFORMED_ANSWER, TIMEOUT, ApprovalRequest, Decision, Denied, SearchFailed, SearchResult,
    client_denial,
)
from warrant_client._proto.warrant.v1 import authorizer_pb2 as pb
from warrant_client._proto.warrant.v1 import authorizer_pb2_grpc as pb_grpc
from warrant_client._wire import (
    Entity, approval_request_message, approval_request_of, check_request, decision_of,
    denial_of_error, search_request, trace_metadata,
)

DEFAULT_TIMEOUT = 1.0
_FIRST_RETRY = 0.02
_LONGEST_RETRY = 0.25
# Results asked for per search page.
_SEARCH_PAGE = 500


def _channel_settings(root_certificates, certificate_chain, private_key, server_name):
    """TLS credentials (None for plaintext) and channel options."""
    options = [("grpc.enable_retries", 0)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if root_certificates is None and certificate_chain is None:
        return None, options
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=private_key,
        certificate_chain=certificate_chain)
    return credentials, options


def _call_arguments(function: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _computed(spec: Any, arguments: Mapping[str, Any]) -> Any:
    """A value for the request from a call's arguments: a callable gets the arguments it names
    (all of them if it takes **kwargs); anything else is the value itself."""
    if not callable(spec):
        return spec
    parameters = inspect.signature(spec).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return spec(**arguments)
    return spec(**{p.name: arguments[p.name] for p in parameters if p.name in arguments})


def _context_of(spec: Any, arguments: Mapping[str, Any]) -> Any:
    """`context=["amount", ...]` takes those arguments as they are; otherwise as `_computed`."""
    if isinstance(spec, (list, tuple)) and all(isinstance(name, str) for name in spec):
        return {name: arguments[name] for name in spec if arguments.get(name) is not None}
    return _computed(spec, arguments)


class _Base:
    def __init__(self, target: str, *, timeout: float, principal: Entity | None,
                 credential: str | Callable[[], str] | None):
        if timeout <= 0:
            raise ValueError("timeout: must be more than 0 seconds")
        self.target = target
        self.timeout = timeout
        self.principal = principal
        self._credential = credential

    def _request(self, principal, action, resource, credential, **fields) -> pb.CheckRequest:
        principal = principal if principal is not None else self.principal
        if principal is None:
            raise ValueError("principal: none given, and the client has no default principal")
        if credential is None:
            credential = self._credential() if callable(self._credential) else self._credential
        return check_request(principal, action, resource, credential=credential, **fields)

    def _current_credential(self) -> str | None:
        return self._credential() if callable(self._credential) else self._credential

    def _batch_requests(self, checks: Sequence[Mapping[str, Any]]) -> pb.BatchCheckRequest:
        items = []
        for at, check in enumerate(checks):
            fields = dict(check)
            try:
                items.append(self._request(fields.pop("principal", None), fields.pop("action", None),
                                           fields.pop("resource", None),
                                           fields.pop("credential", None), **fields))
            except (TypeError, ValueError) as error:
                raise ValueError(f"checks[{at}].{error}") from error
        return pb.BatchCheckRequest(checks=items)

    @staticmethod
    def _batch_decisions(answer: Any, count: int) -> list[Decision]:
        if not isinstance(answer, pb.BatchCheckResponse) or len(answer.results) != count:
            got = len(answer.results) if isinstance(answer, pb.BatchCheckResponse) else None
            return [client_denial(MALFORMED_ANSWER, f"{got} results for {count} checks")] * count
        decisions = []
        for result in answer.results:
            if result.HasField("error"):
                decisions.append(client_denial(
                    "warrant-client:refused", f"{result.error.code}: {result.error.message}",
                    result.error.decision_id))
            else:
                decisions.append(decision_of(result.response))
        return decisions

    def _search_request(self, searched: str, principal, action, resource, of_type, approval,
                        context, include_approvable) -> pb.SearchRequest:
        if searched != "subjects" and principal is None:
            principal = self.principal
            if principal is None:
                raise ValueError("principal: none given, and the client has no default principal")
        return search_request(searched, principal, action, resource, of_type=of_type,
                              approval=approval, context=context,
                              include_approvable=include_approvable, page_size=_SEARCH_PAGE,
                              credential=self._current_credential())

    def _decorate(self, function, action, resource, principal, context, approval,
                  resource_attributes):
        def request_of(args, kwargs) -> dict[str, Any]:
            arguments = _call_arguments(function, args, kwargs)
            return dict(
                principal=_computed(principal, arguments), action=action,
                resource=_computed(resource, arguments),
                context=_context_of(context, arguments),
                approval=_computed(approval, arguments),
                resource_attributes=_computed(resource_attributes, arguments),
            )
        return request_of


class Client(_Base):
    """A blocking client. `target` is host:port; give `root_certificates` (PEM bytes) for TLS,
    and `certificate_chain` and `private_key` too for mutual TLS. `principal` is the identity
    checks are made for when a call names none; `credential` a token (or a function returning
    a fresh one) sent with every check."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT,
                 principal: Entity | None = None, credential: str | Callable[[], str] | None = None,
                 root_certificates: bytes | None = None, certificate_chain: bytes | None = None,
                 private_key: bytes | None = None, server_name: str | None = None):
        super().__init__(target, timeout=timeout, principal=principal, credential=credential)
        credentials, options = _channel_settings(root_certificates, certificate_chain,
                                                 private_key, server_name)
        self._channel = (grpc.secure_channel(target, credentials, options=options) if credentials
                         else grpc.insecure_channel(target, options=options))
        self._stub = pb_grpc.AuthorizerStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _call(self, method, message, timeout: float | None):
        """Calls `method` until an answer, a failure other than UNAVAILABLE, or the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        pause = _FIRST_RETRY
        metadata = trace_metadata()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _OutOfTime()
            try:
                return method(message, timeout=left, metadata=metadata)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or deadline - time.monotonic() <= pause:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, _LONGEST_RETRY)

    def check(self, principal: Entity | None = None, action: str | None = None,
              resource: Entity | None = None, *, approval: str | None = None,
              context: Mapping[str, Any] | None = None, request_id: str | None = None,
              resource_attributes: Mapping[str, Any] | None = None,
              resource_parents: Sequence[Entity] = (), credential: str | None = None,
              timeout: float | None = None) -> Decision:
        """Asks whether `principal` may do `action` on `resource`. Never raises for anything the
        server or the network does: those are denials with a `warrant-client:*` reason. Raises
        `ValueError` (naming the argument) for arguments that cannot make a request."""
        message = self._request(principal, action, resource, credential, approval=approval,
                                context=context, request_id=request_id,
                                resource_attributes=resource_attributes,
                                resource_parents=resource_parents)
        try:
            return decision_of(self._call(self._stub.Check, message, timeout), message.request_id)
        except _OutOfTime:
            return client_denial(TIMEOUT, "the deadline passed", request_id=message.request_id)
        except Exception as error:  # fail closed: whatever it was, it is not an allow
            return denial_of_error(error, message.request_id)

    def batch_check(self, checks: Sequence[Mapping[str, Any]], *,
                    timeout: float | None = None) -> list[Decision]:
        """Decides many actions in one call; each item takes `check`'s arguments. One decision
        per item, in order; a failed call denies every item."""
        message = self._batch_requests(checks)
        try:
            return self._batch_decisions(self._call(self._stub.BatchCheck, message, timeout),
                                         len(checks))
        except _OutOfTime:
            return [client_denial(TIMEOUT, "the deadline passed")] * len(checks)
        except Exception as error:
            return [denial_of_error(error)] * len(checks)

    def guard(self, *args: Any, **kwargs: Any) -> Decision:
        """`check`, raising `Denied` unless the answer is an allow."""
        decision = self.check(*args, **kwargs)
        if not decision.allowed:
            raise Denied(decision)
        return decision

    def search_subjects(self, of_type: str, action: str, resource: Entity, *,
                        approval: str | None = None, context: Mapping[str, Any] | None = None,
                        include_approvable: bool = False, limit: int | None = None,
                        timeout: float | None = None) -> list[SearchResult]:
        """The principals of `of_type` that may take `action` on `resource` now: exactly those a
        Check would allow. Follows every page (up to `limit` results); each page has the
        deadline. Raises `SearchFailed` if the server does not answer, `ValueError` for arguments
        that cannot make a request."""
        return self._search(self._stub.SearchSubjects, self._search_request(
            "subjects", None, action, resource, of_type, approval, context, include_approvable),
            limit, timeout)

    def search_resources(self, of_type: str, action: str, *, principal: Entity | None = None,
                         approval: str | None = None, context: Mapping[str, Any] | None = None,
                         include_approvable: bool = False, limit: int | None = None,
                         timeout: float | None = None) -> list[SearchResult]:
        """The resources of `of_type` the principal (the client's by default) may take `action`
        on now. As `search_subjects`."""
        return self._search(self._stub.SearchResources, self._search_request(
            "resources", principal, action, None, of_type, approval, context,
            include_approvable), limit, timeout)

    def search_actions(self, resource: Entity, *, principal: Entity | None = None,
                       approval: str | None = None, context: Mapping[str, Any] | None = None,
                       include_approvable: bool = False, limit: int | None = None,
                       timeout: float | None = None) -> list[SearchResult]:
        """The actions the principal (the client's by default) may take on `resource` now. As
        `search_subjects`."""
        return self._search(self._stub.SearchActions, self._search_request(
            "actions", principal, None, resource, None, approval, context, include_approvable),
            limit, timeout)

    def _search(self, method, message, limit: int | None, timeout: float | None):
        found: list[SearchResult] = []
        while True:
            try:
                page = self._call(method, message, timeout)
            except _OutOfTime:
                raise SearchFailed("DEADLINE_EXCEEDED", "the deadline passed") from None
            except grpc.RpcError as error:
                raise SearchFailed(error.code().name, error.details() or "") from None
            if _gather(found, page, limit):
                return found
            message.page_token = page.next_page_token

    def requires(self, action: str, resource: Any, *, principal: Any = None, context: Any = None,
                 approval: Any = None, resource_attributes: Any = None) -> Callable:
        """Guards a function: before each call, Warrant is asked, and the function runs only on
        an allow (else `Denied` is raised). `resource`, `principal`, `approval` and
        `resource_attributes` are values or functions of the call's arguments (by name);
        `context` is that too, or a list of argument names to send as they are."""
        def decorate(function: Callable) -> Callable:
            if inspect.iscoroutinefunction(function):
                raise TypeError(f"{function.__name__} is async: guard it with an AsyncClient")
            request_of = self._decorate(function, action, resource, principal, context, approval,
                                        resource_attributes)

            @functools.wraps(function)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                self.guard(**request_of(args, kwargs))
                return function(*args, **kwargs)

            guarded.warrant_action = action  # type: ignore[attr-defined]
            return guarded
        return decorate


    def request_approval(self, decision: Any, *, justification: str, duration_seconds: int,
                         ticket: str | None = None, on_behalf_of: Entity | None = None,
                         timeout: float | None = None) -> ApprovalRequest:
        """Asks for the approval a denied `decision` names (its `approval_required`): a pending
        request a human decides. Raises `grpc.RpcError` if Warrant refuses or cannot be reached
        (nothing is allowed by asking)."""
        message = approval_request_message(decision, justification, duration_seconds, ticket,
                                           on_behalf_of, self._current_credential())
        return approval_request_of(self._stub.RequestApproval(
            message, timeout=timeout or self.timeout, metadata=trace_metadata()))

    def wait_for_approval(self, request: ApprovalRequest | str, *,
                          timeout: float) -> ApprovalRequest:
        """Waits until the request is approved, rejected or expired, or `timeout` seconds pass,
        and returns it as it then stands (still `pending` if time ran out)."""
        request_id = request.id if isinstance(request, ApprovalRequest) else request
        last = None
        stream = self._stub.WatchApprovalRequest(pb.GetApprovalRequestRequest(id=request_id),
                                                 timeout=timeout)
        try:
            for record in stream:
                last = approval_request_of(record)
                if last.state != "pending":
                    break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED or last is None:
                raise
        finally:
            stream.cancel()
        return last


class AsyncClient(_Base):
    """`Client` for asyncio (grpc.aio): the same arguments, and coroutines for its methods."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT,
                 principal: Entity | None = None, credential: str | Callable[[], str] | None = None,
                 root_certificates: bytes | None = None, certificate_chain: bytes | None = None,
                 private_key: bytes | None = None, server_name: str | None = None):
        super().__init__(target, timeout=timeout, principal=principal, credential=credential)
        self._settings = _channel_settings(root_certificates, certificate_chain, private_key,
                                           server_name)
        # Made on first use, inside the event loop that uses it (a client is often made at
        # import time, before the loop that will serve, e.g. an MCP server's, exists).
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.AuthorizerStub | None = None

    def _authorizer(self) -> pb_grpc.AuthorizerStub:
        if self._stub is None:
            credentials, options = self._settings
            self._channel = (
                grpc.aio.secure_channel(self.target, credentials, options=options)
                if credentials else grpc.aio.insecure_channel(self.target, options=options))
            self._stub = pb_grpc.AuthorizerStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_) -> None:
        await self.close()

    async def _call(self, method, message, timeout: float | None):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        pause = _FIRST_RETRY
        metadata = trace_metadata()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise _OutOfTime()
            try:
                return await method(message, timeout=left, metadata=metadata)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or deadline - loop.time() <= pause:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LONGEST_RETRY)

    async def check(self, principal: Entity | None = None, action: str | None = None,
                    resource: Entity | None = None, *, approval: str | None = None,
                    context: Mapping[str, Any] | None = None, request_id: str | None = None,
                    resource_attributes: Mapping[str, Any] | None = None,
                    resource_parents: Sequence[Entity] = (), credential: str | None = None,
                    timeout: float | None = None) -> Decision:
        """As `Client.check`."""
        message = self._request(principal, action, resource, credential, approval=approval,
                                context=context, request_id=request_id,
                                resource_attributes=resource_attributes,
                                resource_parents=resource_parents)
        try:
            answer = await self._call(self._authorizer().Check, message, timeout)
            return decision_of(answer, message.request_id)
        except _OutOfTime:
            return client_denial(TIMEOUT, "the deadline passed", request_id=message.request_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return denial_of_error(error, message.request_id)

    async def batch_check(self, checks: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Decision]:
        """As `Client.batch_check`."""
        message = self._batch_requests(checks)
        try:
            answer = await self._call(self._authorizer().BatchCheck, message, timeout)
            return self._batch_decisions(answer, len(checks))
        except _OutOfTime:
            return [client_denial(TIMEOUT, "the deadline passed")] * len(checks)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return [denial_of_error(error)] * len(checks)

    async def search_subjects(self, of_type: str, action: str, resource: Entity, *,
                              approval: str | None = None,
                              context: Mapping[str, Any] | None = None,
                              include_approvable: bool = False, limit: int | None = None,
                              timeout: float | None = None) -> list[SearchResult]:
        """As `Client.search_subjects`."""
        return await self._search("SearchSubjects", self._search_request(
            "subjects", None, action, resource, of_type, approval, context, include_approvable),
            limit, timeout)

    async def search_resources(self, of_type: str, action: str, *,
                               principal: Entity | None = None, approval: str | None = None,
                               context: Mapping[str, Any] | None = None,
                               include_approvable: bool = False, limit: int | None = None,
                               timeout: float | None = None) -> list[SearchResult]:
        """As `Client.search_resources`."""
        return await self._search("SearchResources", self._search_request(
            "resources", principal, action, None, of_type, approval, context,
            include_approvable), limit, timeout)

    async def search_actions(self, resource: Entity, *, principal: Entity | None = None,
                             approval: str | None = None,
                             context: Mapping[str, Any] | None = None,
                             include_approvable: bool = False, limit: int | None = None,
                             timeout: float | None = None) -> list[SearchResult]:
        """As `Client.search_actions`."""
        return await self._search("SearchActions", self._search_request(
            "actions", principal, None, resource, None, approval, context, include_approvable),
            limit, timeout)

    async def _search(self, method_name: str, message, limit: int | None,
                      timeout: float | None) -> list[SearchResult]:
        found: list[SearchResult] = []
        while True:
            try:
                page = await self._call(getattr(self._authorizer(), method_name), message, timeout)
            except _OutOfTime:
                raise SearchFailed("DEADLINE_EXCEEDED", "the deadline passed") from None
            except grpc.RpcError as error:
                raise SearchFailed(error.code().name, error.details() or "") from None
            if _gather(found, page, limit):
                return found
            message.page_token = page.next_page_token

    async def guard(self, *args: Any, **kwargs: Any) -> Decision:
        """As `Client.guard`."""
        decision = await self.check(*args, **kwargs)
        if not decision.allowed:
            raise Denied(decision)
        return decision

    async def request_approval(self, decision: Any, *, justification: str,
                               duration_seconds: int, ticket: str | None = None,
                               on_behalf_of: Entity | None = None,
                               timeout: float | None = None) -> ApprovalRequest:
        """As `Client.request_approval`."""
        message = approval_request_message(decision, justification, duration_seconds, ticket,
                                           on_behalf_of, self._current_credential())
        record = await self._authorizer().RequestApproval(
            message, timeout=timeout or self.timeout, metadata=trace_metadata())
        return approval_request_of(record)

    async def wait_for_approval(self, request: ApprovalRequest | str, *,
                                timeout: float) -> ApprovalRequest:
        """As `Client.wait_for_approval`."""
        request_id = request.id if isinstance(request, ApprovalRequest) else request
        return await _async_wait(self._authorizer(), request_id, timeout)

    def requires(self, action: str, resource: Any, *, principal: Any = None, context: Any = None,
                 approval: Any = None, resource_attributes: Any = None) -> Callable:
        """As `Client.requires`, for coroutine functions."""
        def decorate(function: Callable) -> Callable:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"{function.__name__} is not async: guard it with a Client")
            request_of = self._decorate(function, action, resource, principal, context, approval,
                                        resource_attributes)

            @functools.wraps(function)
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                await self.guard(**request_of(args, kwargs))
                return await function(*args, **kwargs)

            guarded.warrant_action = action  # type: ignore[attr-defined]
            return guarded
        return decorate


async def _async_wait(stub, request_id: str, timeout: float) -> ApprovalRequest:
    last = None
    call = stub.WatchApprovalRequest(pb.GetApprovalRequestRequest(id=request_id),
                                     timeout=timeout)
    try:
        async for record in call:
            last = approval_request_of(record)
            if last.state != "pending":
                break
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED or last is None:
            raise
    finally:
        call.cancel()
    return last


def _gather(found: list[SearchResult], page: Any, limit: int | None) -> bool:
    """Adds a page's results to `found`; whether the search is done (last page, or `limit`)."""
    if not isinstance(page, pb.SearchResponse):
        raise SearchFailed("MALFORMED_ANSWER", f"not a SearchResponse: {type(page).__name__}")
    for result in page.results:
        if limit is not None and len(found) >= limit:
            return True
        found.append(SearchResult(id=result.id, approvable=result.approvable))
    return not page.next_page_token or (limit is not None and len(found) >= limit)


class _OutOfTime(Exception):
    """The call's deadline passed between retries."""
