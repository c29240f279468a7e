from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import NoReturn, TypeAlias

from pysasl.creds.plain import PlainCredentials
from pysasl.creds.server import ServerCredentials

from sitemail.imap.pymap.bytes import MaybeBytes
from sitemail.imap.pymap.concurrent import Event
from sitemail.imap.pymap.config import IMAPConfig
from sitemail.imap.pymap.context import connection_exit, socket_info
from sitemail.imap.pymap.exceptions import (
    CloseConnection,
    NotAllowedError,
    NotSupportedError,
    UseAttrNotSupported,
)
from sitemail.imap.pymap.fetch import MessageAttributes
from sitemail.imap.pymap.interfaces.login import LoginInterface
from sitemail.imap.pymap.interfaces.session import SessionInterface
from sitemail.imap.pymap.parsing.command import Command, CommandAuth, CommandNonAuth, CommandSelect
from sitemail.imap.pymap.parsing.command.any import (
    CapabilityCommand,
    IdCommand,
    LogoutCommand,
    NoOpCommand,
)
from sitemail.imap.pymap.parsing.command.auth import (
    AppendCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ListCommand,
    RenameCommand,
    SelectCommand,
    StatusCommand,
    SubscribeCommand,
    UnsubscribeCommand,
)
from sitemail.imap.pymap.parsing.command.nonauth import (
    AuthenticateCommand,
    LoginCommand,
    StartTLSCommand,
)
from sitemail.imap.pymap.parsing.command.select import (
    CheckCommand,
    CloseCommand,
    CopyCommand,
    ExpungeCommand,
    FetchCommand,
    IdleCommand,
    MoveCommand,
    SearchCommand,
    StoreCommand,
)
from sitemail.imap.pymap.parsing.commands import InvalidCommand
from sitemail.imap.pymap.parsing.primitives import List, Number
from sitemail.imap.pymap.parsing.response import (
    CommandResponse,
    ResponseBad,
    ResponseCode,
    ResponseNo,
    ResponseOk,
    ResponsePreAuth,
    UntaggedResponse,
)
from sitemail.imap.pymap.parsing.response.code import (
    Capability,
    MailboxId,
    PermanentFlags,
    UidNext,
    UidValidity,
    Unseen,
)
from sitemail.imap.pymap.parsing.response.specials import (
    ESearchResponse,
    ExistsResponse,
    FetchResponse,
    FlagsResponse,
    IdResponse,
    ListResponse,
    LSubResponse,
    RecentResponse,
    SearchResponse,
    StatusResponse,
)
from sitemail.imap.pymap.parsing.specials import (
    FetchAttribute,
    FetchValue,
    SearchKey,
    SequenceSet,
    StatusAttribute,
)
from sitemail.imap.pymap.selected import SelectedMailbox

__all__ = ["ConnectionState"]

_AuthCommands: TypeAlias = AuthenticateCommand | LoginCommand
_CommandRet: TypeAlias = tuple[CommandResponse, SelectedMailbox | None]
_CommandFunc: TypeAlias = Callable[[Command], Awaitable[_CommandRet]]

_flags_attr = FetchAttribute(b"FLAGS")
_uid_attr = FetchAttribute(b"UID")
_modseq_attr = FetchAttribute(b"MODSEQ")

#: RFC 6154 special-use attributes as LIST entries carry them (without the backslash)
_SPECIAL_USES = frozenset({b"All", b"Archive", b"Drafts", b"Flagged", b"Junk", b"Sent", b"Trash"})
#: those CREATE can give a mailbox (\All and \Flagged are virtual: not stored here)
_CREATE_USES = {
    b"\\" + use.lower(): "\\" + use.decode("ascii")
    for use in (b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash")
}


def _uses_modseq(keys: Iterable[SearchKey]) -> bool:
    """A MODSEQ criterion anywhere in the keys (under NOT, OR, parentheses too)."""
    for key in keys:
        if key.value == b"MODSEQ":
            return True
        if key.value == b"KEYSET" and _uses_modseq(key.filter_key_set):
            return True
        if key.value == b"OR" and _uses_modseq(key.filter_key_or):
            return True
    return False


def _esearch(cmd: SearchCommand, found: dict[int, int], with_modseq: bool) -> ESearchResponse:
    """The ESEARCH answer (RFC 4731) to ``SEARCH RETURN (...)``: MIN, MAX, ALL, COUNT in that
    order, then with a MODSEQ criterion the highest modseq of the messages it names (of MIN
    and MAX alone when only they are asked, RFC 7162 3.1.5)."""
    wanted = set(cmd.options.value) or {b"ALL"}
    ids = sorted(found)
    data: dict[bytes, MaybeBytes] = {}
    named: list[int] = []
    if ids and b"MIN" in wanted:
        data[b"MIN"] = Number(ids[0])
        named.append(ids[0])
    if ids and b"MAX" in wanted:
        data[b"MAX"] = Number(ids[-1])
        named.append(ids[-1])
    if ids and b"ALL" in wanted:
        data[b"ALL"] = SequenceSet.build(ids, cmd.uid)
    if b"COUNT" in wanted:
        data[b"COUNT"] = Number(len(ids))
    if wanted & {b"ALL", b"COUNT"}:
        named = ids
    if with_modseq and named:
        data[b"MODSEQ"] = Number(max(found[i] for i in named))
    return ESearchResponse(cmd.tag, cmd.uid, data)


def _highest_modseq_code(selected: SelectedMailbox) -> tuple[bytes, ResponseCode]:
    """The untagged OK that tells a CONDSTORE client the mailbox's HIGHESTMODSEQ (or that it
    keeps none, NOMODSEQ: RFC 7162 3.1.2)."""
    if selected.highest_modseq is None:
        return b"No mod-sequences.", ResponseCode.of(b"NOMODSEQ")
    return b"Highest.", ResponseCode.of(b"HIGHESTMODSEQ %d" % selected.highest_modseq)


class ConnectionState:
    """Defines the state flow of the IMAP connection. Determines if a command
    can be processed at that point in the connection, and interacts with the
    backend plugin.

    """

    def __init__(self, login: LoginInterface, config: IMAPConfig) -> None:
        super().__init__()
        self.config = config
        self.auth = config.initial_auth
        self.login = login
        self._session: SessionInterface | None = None
        self._selected: SelectedMailbox | None = None
        self._capability = list(config.initial_capability)
        #: the client has enabled CONDSTORE (ENABLE, or a CONDSTORE-enabling command)
        self._condstore = False

    @property
    def session(self) -> SessionInterface:
        if self._session is None:
            # Commands using this attribute should be state-bound to only be
            # allowed once a session has begun, so this should not throw.
            raise AttributeError("Connection has not begun a session.", name="session", obj=self)
        return self._session

    @property
    def selected(self) -> SelectedMailbox:
        if self._selected is None:
            # Commands using this attribute should be state-bound to only be
            # allowed once mailbox has been selected, so this should not throw.
            raise AttributeError(
                "Connection has not selected a mailbox.", name="selected", obj=self
            )
        return self._selected

    @property
    def capability(self) -> Capability:
        if self._session:
            return Capability(self._capability)
        logindisabled = [b"LOGINDISABLED"] if self.auth.get_server(b"PLAIN") is None else []
        return Capability(
            self._capability
            + logindisabled
            + [b"AUTH=%b" % mech.name for mech in self.auth.server_mechanisms]
        )

    async def do_cleanup(self) -> None:
        with suppress(Exception):
            await self.session.cleanup()

    async def _login(self, creds: ServerCredentials) -> SessionInterface:
        stack = connection_exit.get()
        authenticated = await self.login.authenticate(creds)
        authorized = await self.login.authorize(authenticated, creds.authzid)
        return await stack.enter_async_context(authorized.new_session())

    async def do_greeting(self) -> CommandResponse:
        sock_info = socket_info.get()
        if self.config.reject_dnsbl and sock_info.dnsbl is not None:
            raise NotAllowedError(f"Connection rejected: {sock_info.dnsbl}")
        preauth_creds = self.config.preauth_credentials
        if preauth_creds:
            self._session = await self._login(preauth_creds)
        elif sock_info.from_localhost:
            self.auth = self.config.tls_auth
        resp_cls: type[CommandResponse]
        resp_cls = ResponsePreAuth if preauth_creds else ResponseOk
        return resp_cls(b"*", self.config.greeting, self.capability)

    async def do_authenticate(
        self, cmd: _AuthCommands, creds: ServerCredentials | None
    ) -> CommandResponse:
        if not creds:
            return ResponseNo(cmd.tag, b"Invalid authentication mechanism.")
        self._session = await self._login(creds)
        self._capability.extend(self.config.login_capability)
        return ResponseOk(cmd.tag, b"Authentication successful.", self.capability)

    async def do_login(self, cmd: LoginCommand) -> _CommandRet:
        if b"LOGINDISABLED" in self.capability:
            raise NotSupportedError("LOGIN is disabled.")
        creds = PlainCredentials(
            cmd.userid.decode("utf-8", "surrogateescape"),
            cmd.password.decode("utf-8", "surrogateescape"),
        )
        return await self.do_authenticate(cmd, creds), None

    async def do_starttls(self, cmd: StartTLSCommand) -> _CommandRet:
        try:
            self._capability.remove(b"STARTTLS")
        except ValueError:
            raise NotSupportedError("STARTTLS not available.") from None
        self.auth = self.config.tls_auth
        return ResponseOk(cmd.tag, b"Ready to handshake."), None

    async def do_capability(self, cmd: CapabilityCommand) -> _CommandRet:
        response = ResponseOk(cmd.tag, b"Capabilities listed.")
        response.add_untagged(UntaggedResponse(self.capability.string))
        return response, None

    async def do_noop(self, cmd: NoOpCommand) -> _CommandRet:
        updates = None
        if self._selected and self._session:
            updates = await self.session.check_mailbox(self.selected)
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_id(self, cmd: IdCommand) -> _CommandRet:
        response = ResponseOk(cmd.tag, cmd.command + b" completed.")
        response.add_untagged(IdResponse(self.config.id_response))
        return response, None

    def _enable_condstore(self) -> None:
        if b"CONDSTORE" not in self.capability:
            raise NotSupportedError("CONDSTORE is not available.")
        self._condstore = True

    async def do_enable(self, cmd: EnableCommand) -> _CommandRet:
        # RFC 5161: what the server does not support is left out of ENABLED, not an error
        supported = b"CONDSTORE" in self.capability
        enabled = [n for n in dict.fromkeys(cmd.capabilities) if n == b"CONDSTORE" and supported]
        if enabled:
            self._enable_condstore()
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp.add_untagged(UntaggedResponse(b" ".join([b"ENABLED", *enabled])))
        updates = None
        if self._selected is not None:
            updates = await self.session.check_mailbox(self.selected)
        return resp, updates

    async def do_select(self, cmd: SelectCommand) -> _CommandRet:
        self._selected = None
        if cmd.condstore:
            self._enable_condstore()
        mailbox, updates = await self.session.select_mailbox(cmd.mailbox, cmd.readonly)
        # FLAGS first: PERMANENTFLAGS may only name keywords FLAGS has introduced
        if updates.readonly:
            num_recent = mailbox.recent
            resp = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-ONLY"))
            resp.add_untagged(FlagsResponse(mailbox.flags))
            resp.add_untagged_ok(b"Read-only mailbox.", PermanentFlags([]))
        else:
            num_recent = updates.session_flags.recent
            resp = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-WRITE"))
            resp.add_untagged(FlagsResponse(mailbox.flags))
            resp.add_untagged_ok(
                b"Flags permitted.", PermanentFlags(mailbox.permanent_flags | mailbox.keywords)
            )
        messages = updates.messages
        updates.announce_flags(mailbox.flags)
        resp.add_untagged(ExistsResponse(messages.exists))
        resp.add_untagged(RecentResponse(num_recent))
        resp.add_untagged_ok(b"Predicted next UID.", UidNext(mailbox.next_uid))
        resp.add_untagged_ok(b"UIDs valid.", UidValidity(mailbox.uid_validity))
        if b"CONDSTORE" in self.capability:  # on every SELECT (RFC 7162 3.1.2.1)
            resp.add_untagged_ok(*_highest_modseq_code(updates))
        if mailbox.first_unseen:
            resp.add_untagged_ok(b"First unseen message.", Unseen(mailbox.first_unseen))
        resp.add_untagged_ok(b"Object ID.", MailboxId(mailbox.mailbox_id))
        return resp, updates

    async def do_create(self, cmd: CreateCommand) -> _CommandRet:
        if cmd.mailbox == "INBOX":
            return ResponseNo(cmd.tag, b"Cannot create INBOX."), None
        uses = {use.lower() for use in cmd.special_use}
        if len(uses) > 1 or not uses <= _CREATE_USES.keys():
            raise UseAttrNotSupported(cmd.mailbox)
        mailbox_id, updates = await self.session.create_mailbox(
            cmd.mailbox,
            selected=self._selected,
            special_use=_CREATE_USES[uses.pop()] if uses else "",
        )
        return ResponseOk(cmd.tag, cmd.command + b" completed.", MailboxId(mailbox_id)), updates

    async def do_delete(self, cmd: DeleteCommand) -> _CommandRet:
        if cmd.mailbox == "INBOX":
            return ResponseNo(cmd.tag, b"Cannot delete INBOX."), None
        updates = await self.session.delete_mailbox(cmd.mailbox, selected=self._selected)
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_rename(self, cmd: RenameCommand) -> _CommandRet:
        if cmd.to_mailbox == "INBOX":
            return ResponseNo(cmd.tag, b"Cannot rename to INBOX."), None
        updates = await self.session.rename_mailbox(
            cmd.from_mailbox, cmd.to_mailbox, selected=self._selected
        )
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_status(self, cmd: StatusCommand) -> _CommandRet:
        mailbox, updates = await self.session.get_mailbox(cmd.mailbox, selected=self._selected)
        data: dict[StatusAttribute, MaybeBytes] = {}
        for attr in cmd.status_list:
            if attr == b"MESSAGES":
                data[attr] = Number(mailbox.exists)
            elif attr == b"RECENT":
                if updates and updates.mailbox_id == mailbox.mailbox_id:
                    data[attr] = Number(updates.session_flags.recent)
                else:
                    data[attr] = Number(mailbox.recent)
            elif attr == b"UNSEEN":
                data[attr] = Number(mailbox.unseen)
            elif attr == b"UIDNEXT":
                data[attr] = Number(mailbox.next_uid)
            elif attr == b"UIDVALIDITY":
                data[attr] = Number(mailbox.uid_validity)
            elif attr == b"MAILBOXID":
                data[attr] = mailbox.mailbox_id.parens
            elif attr == b"HIGHESTMODSEQ":
                self._enable_condstore()
                data[attr] = Number(mailbox.highest_modseq or 0)  # 0: keeps none (3.1.6)
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp.add_untagged(StatusResponse(cmd.mailbox, data))
        return resp, updates

    async def do_append(self, cmd: AppendCommand) -> _CommandRet:
        if len(cmd.messages) > 1 and b"MULTIAPPEND" not in self.capability:
            raise NotSupportedError("MULTIAPPEND is disabled.")
        if cmd.cancelled:
            return ResponseNo(cmd.tag, b"APPEND cancelled."), None
        if cmd.error:
            raise cmd.error
        append_uid, updates = await self.session.append_messages(
            cmd.mailbox, cmd.messages, selected=self._selected
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.", append_uid)
        return resp, updates

    async def do_subscribe(self, cmd: SubscribeCommand) -> _CommandRet:
        updates = await self.session.subscribe(cmd.mailbox, selected=self._selected)
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_unsubscribe(self, cmd: UnsubscribeCommand) -> _CommandRet:
        updates = await self.session.unsubscribe(cmd.mailbox, selected=self._selected)
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_list(self, cmd: ListCommand) -> _CommandRet:
        mailboxes, updates = await self.session.list_mailboxes(
            cmd.ref_name, cmd.filter, subscribed=cmd.only_subscribed, selected=self._selected
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp_type = LSubResponse if cmd.only_subscribed else ListResponse
        for name, sep, attrs in mailboxes:
            if cmd.special_use_only and not _SPECIAL_USES.intersection(attrs):
                continue  # LIST (SPECIAL-USE): special-use mailboxes only (RFC 6154 5.1)
            resp.add_untagged(resp_type(name, sep, attrs))
        return resp, updates

    async def do_check(self, cmd: CheckCommand) -> _CommandRet:
        updates = await self.session.check_mailbox(self.selected, housekeeping=True)
        return ResponseOk(cmd.tag, cmd.command + b" completed."), updates

    async def do_close(self, cmd: CloseCommand) -> _CommandRet:
        # RFC 3501 6.4.2: CLOSE after EXAMINE just closes; nothing is expunged
        if not self.selected.readonly:
            await self.session.expunge_mailbox(self.selected)
        self._selected = None
        return ResponseOk(cmd.tag, cmd.command + b" completed."), None

    async def do_expunge(self, cmd: ExpungeCommand) -> _CommandRet:
        updates = await self.session.expunge_mailbox(self.selected, cmd.uid_set)
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        return resp, updates

    async def do_copy(self, cmd: CopyCommand) -> _CommandRet:
        copy_uid, updates = await self.session.copy_messages(
            self.selected, cmd.sequence_set, cmd.mailbox
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.", copy_uid)
        return resp, updates

    async def do_move(self, cmd: MoveCommand) -> _CommandRet:
        copy_uid, updates = await self.session.move_messages(
            self.selected, cmd.sequence_set, cmd.mailbox
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp.add_untagged_ok(b"Moved.", copy_uid)
        return resp, updates

    def _fetch_attributes(self, cmd: FetchCommand) -> list[FetchAttribute]:
        """The attributes to send: MODSEQ added when CHANGEDSINCE is given, or with FLAGS
        once CONDSTORE is on (RFC 7162 3.1.4.1, 3.2)."""
        attributes = list(cmd.attributes)
        names = {attr.value for attr in attributes}
        if b"MODSEQ" in names or cmd.changedsince is not None:
            self._enable_condstore()
        wanted = cmd.changedsince is not None or (self._condstore and b"FLAGS" in names)
        if wanted and b"MODSEQ" not in names:
            attributes.append(_modseq_attr)
        return attributes

    async def do_fetch(self, cmd: FetchCommand) -> _CommandRet:
        if not cmd.uid:
            self.selected.hide_expunged = True
        attributes = self._fetch_attributes(cmd)
        changedsince = cmd.changedsince
        set_seen = not self.selected.readonly and any(attr.set_seen for attr in attributes)
        messages, updates = await self.session.fetch_messages(
            self.selected, cmd.sequence_set, set_seen
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        for msg_seq, msg in messages:
            if changedsince is not None and msg.modseq <= changedsince:
                continue
            if msg.expunged:
                resp.code = ResponseCode.of(b"EXPUNGEISSUED")
            msg_attrs = MessageAttributes(msg, self.selected, attributes)
            fetch_resp = FetchResponse(msg_seq, msg_attrs, writing_hook=msg_attrs.load_hook())
            resp.add_untagged(fetch_resp)
        return resp, updates

    async def do_search(self, cmd: SearchCommand) -> _CommandRet:
        if not cmd.uid:
            self.selected.hide_expunged = True
        with_modseq = _uses_modseq(cmd.keys)
        if with_modseq:
            self._enable_condstore()
        if cmd.esearch and b"ESEARCH" not in self.capability:
            raise NotSupportedError("ESEARCH is not available.")
        messages, updates = await self.session.search_mailbox(self.selected, cmd.keys)
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        found: dict[int, int] = {}  # sequence number or UID -> modseq
        for msg_seq, msg in messages:
            if msg.expunged:
                resp.code = ResponseCode.of(b"EXPUNGEISSUED")
            found[msg.uid if cmd.uid else msg_seq] = msg.modseq
        if cmd.esearch:
            resp.add_untagged(_esearch(cmd, found, with_modseq))
        else:
            # SEARCH MODSEQ: the highest modseq of the matches, when any (RFC 7162 3.1.5)
            highest = max(found.values()) if with_modseq and found else None
            resp.add_untagged(SearchResponse(list(found), highest))
        return resp, updates

    async def do_store(self, cmd: StoreCommand) -> _CommandRet:
        if not cmd.uid:
            self.selected.hide_expunged = True
        unchanged_since = cmd.unchangedsince
        if unchanged_since is not None:
            self._enable_condstore()
        if cmd.silent:
            self.selected.silence(cmd.sequence_set, cmd.flag_set, cmd.mode)
        asked = self.selected.messages.get_all(cmd.sequence_set)
        messages, updates = await self.session.update_flags(
            self.selected,
            cmd.sequence_set,
            cmd.flag_set,
            cmd.mode,
            unchanged_since=unchanged_since,
        )
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        session_flags = self.selected.session_flags
        done: set[int] = set()
        for msg_seq, msg in messages:
            done.add(msg.uid)
            if msg.expunged:
                resp.code = ResponseCode.of(b"EXPUNGEISSUED")
                continue
            if cmd.silent and not self._condstore:
                continue
            fetch_data: list[FetchValue] = []
            if not cmd.silent:  # with CONDSTORE a silent STORE still tells the MODSEQ (3.1.3)
                flags = msg.get_flags(session_flags)
                fetch_data.append(FetchValue.of(_flags_attr, List(flags, sort=True)))
            if cmd.uid:
                fetch_data.append(FetchValue.of(_uid_attr, Number(msg.uid)))
            if self._condstore:
                fetch_data.append(FetchValue.of(_modseq_attr, b"(%d)" % msg.modseq))
            resp.add_untagged(FetchResponse(msg_seq, fetch_data))
        modified = [
            cached.uid if cmd.uid else seq for seq, cached in asked if cached.uid not in done
        ]
        if unchanged_since is not None and modified:
            ids = bytes(SequenceSet.build(modified))
            resp.code = ResponseCode.of(b"MODIFIED " + ids)
        return resp, updates

    async def do_idle(self, cmd: IdleCommand) -> _CommandRet:
        if b"IDLE" not in self.capability:
            raise NotSupportedError("IDLE is disabled.")
        return ResponseOk(cmd.tag, cmd.command + b" completed."), None

    @classmethod
    async def do_logout(cls, cmd: LogoutCommand) -> NoReturn:
        raise CloseConnection()

    async def receive_updates(self, cmd: IdleCommand, done: Event) -> Iterable[UntaggedResponse]:
        selected = await self.session.check_mailbox(self.selected, wait_on=done)
        selected.condstore = self._condstore
        self._selected, untagged = selected.fork(cmd)
        return untagged

    @classmethod
    def _get_func_name(cls, cmd: Command) -> str:
        cmd_type = type(cmd)
        while cmd_type.delegate:
            cmd_type = cmd_type.delegate
        cmd_str = str(cmd_type.command, "ascii").lower()
        return "do_" + cmd_str

    def refusal(self, cmd_type: type[Command]) -> bytes | None:
        """Why a command of this type may not run in the current state, or None. Asked
        before the command's arguments are parsed, and again before it runs."""
        if self._session and issubclass(cmd_type, CommandNonAuth):
            return cmd_type.command + b": Already authenticated."
        if not self._session and issubclass(cmd_type, CommandAuth):
            return cmd_type.command + b": Must authenticate first."
        if not self._selected and issubclass(cmd_type, CommandSelect):
            return cmd_type.command + b": Must select a mailbox first."
        return None

    async def do_command(self, cmd: Command) -> CommandResponse:
        if isinstance(cmd, InvalidCommand):
            if cmd.refusal is not None:
                return ResponseNo(cmd.tag, cmd.refusal, ResponseCode.of(b"CANNOT"))
            return ResponseBad(cmd.tag, cmd.message)
        reason = self.refusal(type(cmd))
        if reason is not None:
            return ResponseBad(cmd.tag, reason)
        func_name = self._get_func_name(cmd)
        try:
            func: _CommandFunc = getattr(self, func_name)
        except AttributeError:
            return ResponseNo(cmd.tag, cmd.command + b": Not Implemented")
        condstore_before = self._condstore
        response, selected = await func(cmd)
        if selected is not None:
            selected.condstore = self._condstore
            if self._condstore and not condstore_before and not isinstance(cmd, SelectCommand):
                # CONDSTORE enabled while a mailbox is selected: its HIGHESTMODSEQ (3.1)
                response.add_untagged_ok(*_highest_modseq_code(selected))
            self._selected, untagged = selected.fork(cmd)
            for update in untagged:
                if isinstance(update, FlagsResponse):
                    response.add_untagged_first(update)
                else:
                    response.add_untagged(update)
        return response
