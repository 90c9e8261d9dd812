"""POST /v1/events: a batch of interactions, idempotent by event id, judged per event."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, status

from promptrec.core.cached_reads import invalidate_user_contexts
from promptrec.core.repositories import interactions, items, users
from promptrec.service.api.access import CLIENT_RESPONSES, ClientRoute
from promptrec.service.api.deps import RuntimeDep, SessionDep
from promptrec.service.api.schemas import (
    EventIn,
    EventResult,
    EventsRequest,
    EventsResponse,
    Problem,
)

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    route_class=ClientRoute,
    responses=CLIENT_RESPONSES,
)


def _seconds(event: EventIn) -> int:
    if isinstance(event.timestamp, int):
        return event.timestamp
    return int(event.timestamp.timestamp())


@router.post("/events", response_model=EventsResponse, responses={422: {"model": Problem}})
async def ingest_events(
    body: EventsRequest, runtime: RuntimeDep, session: SessionDep
) -> EventsResponse:
    """Accepted events extend the user's history and the counters the worker's new-user and
    drift triggers read; a repeated event id is a duplicate, not an error; an unknown item or an
    impossible time rejects that event only."""
    limit = runtime.settings.max_events_per_request
    if len(body.events) > limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"at most {limit} events per request"
        )
    latest_allowed = time.time() + runtime.settings.max_event_skew_s
    known = await items.known_item_ids(session, [e.item_id for e in body.events])
    verdicts: dict[int, EventResult] = {}
    valid: list[interactions.NewEvent] = []
    seen_ids: set[str] = set()
    for n, event in enumerate(body.events):
        seconds = _seconds(event)
        if event.item_id not in known:
            verdicts[n] = EventResult(
                event_id=event.event_id, status="rejected", reason="unknown item"
            )
        elif seconds < 0 or seconds > latest_allowed:
            verdicts[n] = EventResult(
                event_id=event.event_id,
                status="rejected",
                reason="bad time: before 1970 or in the future",
            )
        elif event.event_id in seen_ids:
            verdicts[n] = EventResult(event_id=event.event_id, status="duplicate")
        else:
            seen_ids.add(event.event_id)
            valid.append(
                interactions.NewEvent(
                    event.event_id, event.user_id, event.item_id, seconds, event.recommendation_id
                )
            )
    await users.ensure_users(session, sorted({e.user_id for e in valid}))
    inserted = await interactions.record_events(session, valid)
    await session.commit()
    await invalidate_user_contexts(
        runtime.cache, sorted({e.user_id for e in valid if e.event_id in inserted})
    )
    results = []
    for n, event in enumerate(body.events):
        if n not in verdicts:
            outcome = "accepted" if event.event_id in inserted else "duplicate"
            verdicts[n] = EventResult(event_id=event.event_id, status=outcome)
        results.append(verdicts[n])
    return EventsResponse(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        results=results,
    )
