"""The server quirks caldavfs works around, in one table (the README shows the same table).

Each row names the server, what it does, what caldavfs does about it, and the module where
that happens; the comment at that place names the server too. Servers were probed on this
project's machines (Radicale 3.9, Xandikos 0.4, SabreDAV 1.8 in the tests) or are known from
their users' bug reports (the others).
"""

from __future__ import annotations

from typing import NamedTuple


class Quirk(NamedTuple):
    server: str
    what: str
    workaround: str
    where: str


QUIRKS: tuple[Quirk, ...] = (
    Quirk("Radicale", "answers requests without credentials with a 401 after a 0.5-1.5 s delay",
          "Basic credentials go with the first request", "dav"),
    Quirk("Cyrus", "answers an anonymous PROPFIND with 207 instead of a 401 challenge",
          "Basic credentials go with the first request", "dav"),
    Quirk("Xandikos, Cyrus, SOGo", "redirect /.well-known/caldav with 301/302, which requests turns into "
          "a GET or a body-less PROPFIND", "redirects are followed by caldavfs with method and body", "dav"),
    Quirk("Xandikos", "answers a PROPFIND of a missing URL with 207 and an inner 404",
          "an inner 404 counts as not found", "client"),
    Quirk("Xandikos", "sends no getlastmodified", "mtime from the item's LAST-MODIFIED, else DTSTAMP, "
          "moved forward whenever the item changes", "client, tree"),
    Quirk("Xandikos", "PROPFIND Depth 1 of a big calendar is slow (about 1 s per 2,000 items)",
          "with no getlastmodified to lose, changes come by sync-collection", "tree"),
    Quirk("Radicale, Xandikos", "refuse an old sync-token with 403 / 412 valid-sync-token",
          "the calendar is listed in full", "client, tree"),
    Quirk("Radicale", "answers sync-collection and calendar-query without getlastmodified",
          "its calendars are listed by PROPFIND Depth 1, the one answer with the server's times", "tree"),
    Quirk("Xandikos", "answers calendar-data with 404 for items stored without .ics",
          "such items are fetched with GET", "client"),
    Quirk("Xandikos", "refuses MOVE within a calendar (412 no-uid-conflict)",
          "rename falls back to PUT + DELETE", "writer"),
    Quirk("SabreDAV", "answers a whole calendar-multiget with 404 when one item in it is gone",
          "the batch is split until the gone item is found", "client"),
    Quirk("SabreDAV 1.8", "has no sync-collection", "calendars are compared by getctag", "client"),
    Quirk("SabreDAV 1.8", "keeps bytes as uploaded, bare LF included, and sends calendar-data with LF "
          "whatever it stores", "listings ask for getcontentlength, which tells CRLF from LF; an item "
          "neither fits is fetched with GET", "client"),
    Quirk("SabreDAV 4", "sends no ETag after a PUT it rewrote", "every upload is read back", "tree"),
    Quirk("SabreDAV (Nextcloud, Baikal)", "hex-encodes hrefs in lower case", "hrefs are compared after "
          "normalising their percent-encoding", "client"),
    Quirk("Radicale, DAViCal", "encode @ in hrefs, where Xandikos, Cyrus and SOGo don't",
          "hrefs are compared after normalising their percent-encoding", "client"),
    Quirk("Radicale", "works out getcontentlength by serialising each item on every PROPFIND "
          "(a third of a listing's time), and getetag by hashing it; its collection getlastmodified "
          "covers its items'",
          "a calendar listed cold comes in one calendar-query, then a PROPFIND for mtimes alone; a "
          "folder's own stat comes from the home-set's getlastmodified, a calendar is listed when "
          "something in it is asked", "client, tree"),
    Quirk("Radicale", "answers two requests at once slower than one after the other (one process, one GIL)",
          "a calendar's query and PROPFIND go one after the other; a walk sends the next calendar's "
          "when the server has answered", "client, tree"),
    Quirk("Radicale", "gzips every answer the client accepts gzip for (a fifth of a calendar-query's time)",
          "a server on this machine is asked for uncompressed answers", "dav"),
    Quirk("Radicale", "getctag and sync-token asked together cost twice one of them",
          "after the first answer only the change tag the server has is asked for", "client"),
    Quirk("Radicale, Xandikos", "rewrite uploaded data (reorder, refold, add DTSTAMP)",
          "every upload is read back; the mount shows what the server stored", "tree"),
    Quirk("SOGo", "gives every item the same etag", "caches are keyed by (href, etag), never etag alone",
          "cache, diskcache"),
    Quirk("SOGo", "ends getlastmodified in +0000 instead of GMT", "dates are parsed with both forms", "client"),
    Quirk("SOGo", "marks its personal calendar as calendar and schedule-outbox",
          "a collection is a calendar by the calendar marker alone", "client"),
    Quirk("SOGo", "has no MOVE", "rename falls back to PUT + DELETE", "writer"),
    Quirk("Cyrus, iCloud", "refuse a second item with the same UID (no-uid-conflict), also across calendars",
          "a move deletes the original first where the copy is refused with no-uid-conflict",
          "writer"),
    Quirk("Cyrus", "answers a calendar DELETE that worked with 404", "a 404 on DELETE without If-Match is success",
          "client"),
    Quirk("iCloud", "puts the calendar home on another host (pNN-caldav.icloud.com)",
          "credentials go to a home the server named", "client, dav"),
    Quirk("iCloud", "repeats every property in a second propstat with 404 and an empty value",
          "only 2xx propstats count", "davxml"),
    Quirk("iCloud", "lists the calendar collection itself among its items", "the collection is skipped",
          "client"),
    Quirk("iCloud", "needs Content-Type text/calendar on PUT", "always sent", "client"),
    Quirk("Zimbra, DavMail", "repeat hrefs in one multistatus", "the first is kept, the rest logged", "client"),
    Quirk("Zoho", "stops answering a multiget at 100 items without saying so",
          "a short answer is asked again, in smaller batches; a missing item is never taken as deleted",
          "client"),
    Quirk("DAViCal", "stalls ~5 s when many idle pooled connections pile up", "a pool of 4 connections", "dav"),
    Quirk("Google", "accepts OAuth bearer tokens only", "--token-command, run again on a 401", "dav"),
    Quirk("several", "put raw control characters into XML", "they are removed, with a warning", "davxml"),
)
