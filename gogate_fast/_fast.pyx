# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""The compiled hot path: server frames, coalescing per-connection sinks, and the fan-out loop,
which writes each user's stream events with that user's offset and in offset order.

``gogate_fast._pure`` is its twin, statement for statement: the same ring, the same shedding,
the same flush rules. The tests run against both.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython cimport array
from libc.string cimport memcpy

import array as _array

cdef Py_ssize_t _live_sinks = 0
cdef Py_ssize_t _live_rings = 0
cdef Py_ssize_t _queued_frames = 0
cdef bytes _EMPTY = b""
cdef array.array _NO_RECEIVERS = _array.array("q")
cdef const char* _OFFSET_KEY = b',"offset":'
cdef Py_ssize_t _KEY_SIZE = 10


def stats():
    """Live sinks, allocated send rings and the frames waiting in them: a leak shows as counts
    that do not return to 0 once the connections are gone."""
    return {"sinks": _live_sinks, "rings": _live_rings, "queued": _queued_frames}


cdef inline Py_ssize_t _write_header(unsigned char* out, Py_ssize_t size) noexcept:
    """Write the header of a frame of ``size`` payload bytes; returns its length."""
    cdef unsigned long long length
    cdef int i
    out[0] = 0x81
    if size < 126:
        out[1] = <unsigned char>size
        return 2
    if size < 65536:
        out[1] = 126
        out[2] = <unsigned char>((size >> 8) & 0xFF)
        out[3] = <unsigned char>(size & 0xFF)
        return 4
    out[1] = 127
    length = <unsigned long long>size
    for i in range(8):
        out[9 - i] = <unsigned char>((length >> (8 * i)) & 0xFF)
    return 10


cdef inline Py_ssize_t _header_size(Py_ssize_t size) noexcept:
    if size < 126:
        return 2
    if size < 65536:
        return 4
    return 10


cpdef bytes build_frame(bytes payload, long long offset=-1):
    """A final, unmasked text frame carrying ``payload``: valid for every receiver. With an
    ``offset`` of 0 or more, ``payload`` (one JSON object) gains a last member
    ``"offset":<offset>``: the frame of a stream event for one user."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef unsigned char* out
    if offset >= 0:
        _check_stream_event(payload)
        return _offset_frame(payload, offset)
    frame = PyBytes_FromStringAndSize(NULL, _header_size(size) + size)
    out = <unsigned char*>PyBytes_AS_STRING(frame)
    memcpy(out + _write_header(out, size), PyBytes_AS_STRING(payload), size)
    return frame


cdef int _check_stream_event(bytes payload) except -1:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef const char* data = PyBytes_AS_STRING(payload)
    if size < 3 or data[0] != b'{' or data[size - 1] != b'}':
        raise ValueError("a stream event is a non-empty JSON object")
    return 0


cdef bytes _offset_frame(bytes payload, long long offset):
    """The frame of a stream event (``payload``, checked) with ``offset``: the event without
    its closing brace, which every offset shares, then the key, the digits and the brace."""
    cdef char digits[24]
    cdef int count = 0
    cdef unsigned long long rest = <unsigned long long>offset
    cdef Py_ssize_t shared = PyBytes_GET_SIZE(payload) - 1
    cdef Py_ssize_t size, at
    cdef unsigned char* out
    digits[23] = b'}'
    while True:  # the digits, backwards, before the closing brace
        count += 1
        digits[23 - count] = <char>(48 + rest % 10)
        rest //= 10
        if rest == 0:
            break
    size = shared + _KEY_SIZE + count + 1
    frame = PyBytes_FromStringAndSize(NULL, _header_size(size) + size)
    out = <unsigned char*>PyBytes_AS_STRING(frame)
    at = _write_header(out, size)
    memcpy(out + at, PyBytes_AS_STRING(payload), shared)
    at += shared
    memcpy(out + at, _OFFSET_KEY, _KEY_SIZE)
    memcpy(out + at + _KEY_SIZE, digits + 23 - count, count + 1)
    return frame


cdef class Flusher:
    """Writes the frames each sink collected in one write, for every sink at once.

    With ``delay`` 0 the write happens once the loop iteration's callbacks have run
    (``schedule`` is the loop's ``call_soon``). With a positive ``delay`` (seconds) the sinks
    collect frames for that long first (``call_later`` is the loop's ``call_later``): fewer,
    larger writes for a little latency.
    """

    def __cinit__(self, schedule, double delay=0.0, call_later=None):
        if delay < 0.0:
            raise ValueError("delay must not be negative")
        if delay > 0.0 and call_later is None:
            raise ValueError("a positive delay needs call_later")
        self._schedule = schedule
        self._call_later = call_later
        self._delay = delay
        self._dirty = []
        self._scheduled = False
        self._flush_cb = self.flush

    cdef inline void _mark(self, Sink sink) except *:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            if self._delay > 0.0:
                self._call_later(self._delay, self._flush_cb)
            else:
                self._schedule(self._flush_cb)

    cpdef flush(self):
        """Write every collected frame now."""
        cdef list dirty = self._dirty
        cdef Py_ssize_t i
        cdef PyObject* sink  # borrowed from ``dirty``, which holds it for the loop
        self._dirty = []
        self._scheduled = False
        for i in range(PyList_GET_SIZE(dirty)):
            sink = PyList_GET_ITEM(dirty, i)
            (<Sink>sink)._dirty = False
            (<Sink>sink)._flush_pending()


cdef class Sink:
    """The outbound side of one connection.

    While the transport takes data, frames are written, or collected for the :class:`Flusher`
    when one is given (and written at once when ``capacity`` of them, at least two, wait).
    While it is paused, they wait in order in a ring bounded by ``capacity`` frames and
    ``max_bytes`` bytes: a droppable frame (typing) that does not fit is dropped, a frame that
    must arrive sheds the oldest queued droppable frames to fit, and when it cannot fit
    :meth:`send` returns ``False`` for the owner to close the connection as a slow consumer.
    Nothing else is ever dropped from an open connection.

    Its place in its user's stream: ``epoch`` (None: no stream) and ``stream_last``, the offset
    of the last stream event written to it (-1: offsets are not checked). While
    ``catching_up`` (a replay under way) the fan-out writes it nothing and only raises
    ``seen`` to the highest offset it offered. ``on_resume``, when set, is called once the
    socket drained and the queued frames are written: a writer paced by the socket (see
    :meth:`write_now`) goes on.
    """

    def __cinit__(self, write, Py_ssize_t capacity, Py_ssize_t max_bytes, owner=None,
                  Flusher flusher=None):
        global _live_sinks
        _live_sinks += 1  # first: __dealloc__ runs even when the arguments are refused
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self._write = write
        self._flusher = flusher
        self._pending = None
        self._frames = NULL
        self._droppable = NULL
        self._head = 0
        self._count = 0
        self._paused = False
        self._closed = False
        self._dirty = False
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.owner = owner
        self.epoch = None
        self.stream_last = -1
        self.seen = 0
        self.catching_up = False
        self.on_resume = None

    def __dealloc__(self):
        global _live_sinks
        self._free_ring()
        _live_sinks -= 1

    @property
    def paused(self):
        return self._paused

    @property
    def closed(self):
        return self._closed

    cpdef bint send(self, bytes frame, bint droppable=False) except -1:
        """Write, collect or queue ``frame``; ``False`` means the queue overflowed."""
        if self._closed:
            return True
        if not self._paused:
            if self._flusher is None:
                self._write(frame)
            else:
                self._collect(frame)
            return True
        return self._enqueue(frame, droppable)

    cdef inline void _collect(self, bytes frame) except *:
        if self._pending is None:
            self._pending = frame
            if not self._dirty:
                self._dirty = True
                self._flusher._mark(self)
        else:
            self._collect_more(frame)

    cdef void _collect_more(self, bytes frame) except *:
        pending = self._pending
        if type(pending) is bytes:
            pending = self._pending = [pending, frame]
        else:
            (<list>pending).append(frame)
        if PyList_GET_SIZE(<list>pending) >= self.capacity:
            self._flush_pending()

    cdef bint _enqueue(self, bytes frame, bint droppable) except -1:
        global _queued_frames
        cdef Py_ssize_t size = PyBytes_GET_SIZE(frame)
        cdef Py_ssize_t slot
        if self._count >= self.capacity or self.queued_bytes + size > self.max_bytes:
            if droppable:
                return True
            if not self._shed(size):
                return False
        if self._frames == NULL:
            self._alloc_ring()
        slot = (self._head + self._count) % self.capacity
        Py_INCREF(frame)
        self._frames[slot] = <PyObject*>frame
        self._droppable[slot] = droppable
        self._count += 1
        self.queued_bytes += size
        _queued_frames += 1
        return True

    cdef bint _shed(self, Py_ssize_t size) except -1:
        """Drop the oldest queued droppable frames until a frame of ``size`` bytes fits;
        ``False`` (and nothing dropped) when it cannot fit."""
        global _queued_frames
        cdef Py_ssize_t count = self._count
        cdef Py_ssize_t queued = self.queued_bytes
        cdef Py_ssize_t reach = 0
        cdef Py_ssize_t kept = 0
        cdef Py_ssize_t i, slot, at
        cdef PyObject* frame
        # How far from the oldest the droppable frames must go for the new one to fit.
        while count >= self.capacity or queued + size > self.max_bytes:
            if reach == self._count:
                return False
            slot = (self._head + reach) % self.capacity
            if self._droppable[slot]:
                count -= 1
                queued -= PyBytes_GET_SIZE(<bytes>self._frames[slot])
            reach += 1
        # Drop those, keeping every other frame in order.
        for i in range(self._count):
            slot = (self._head + i) % self.capacity
            frame = self._frames[slot]
            if i < reach and self._droppable[slot]:
                Py_DECREF(<object>frame)
                continue
            at = (self._head + kept) % self.capacity
            self._frames[at] = frame
            self._droppable[at] = self._droppable[slot]
            kept += 1
        _queued_frames -= self._count - kept
        self._count = kept
        self.queued_bytes = queued
        return True

    cdef inline bint _alloc_ring(self) except -1:
        global _live_rings
        self._frames = <PyObject**>PyMem_Malloc(self.capacity * sizeof(PyObject*))
        self._droppable = <unsigned char*>PyMem_Malloc(self.capacity)
        if self._frames == NULL or self._droppable == NULL:
            PyMem_Free(self._frames)
            PyMem_Free(self._droppable)
            self._frames = NULL
            self._droppable = NULL
            raise MemoryError()
        _live_rings += 1
        return True

    cdef inline void _free_ring(self) noexcept:
        global _live_rings, _queued_frames
        cdef Py_ssize_t i
        if self._frames == NULL:
            return
        for i in range(self._count):
            Py_DECREF(<object>self._frames[(self._head + i) % self.capacity])
        PyMem_Free(self._frames)
        PyMem_Free(self._droppable)
        self._frames = NULL
        self._droppable = NULL
        _queued_frames -= self._count
        self._head = 0
        self._count = 0
        self.queued_bytes = 0
        _live_rings -= 1

    cdef void _flush_pending(self) except *:
        # A closed sink holds no pending frames: close() takes them.
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if type(pending) is bytes:
            self._write(pending)
        else:
            self._write(_EMPTY.join(<list>pending))

    cpdef flush(self):
        """Write this sink's collected frames now (before a close frame, say)."""
        self._flush_pending()

    cpdef write_now(self, bytes data):
        """Write ``data`` (whole frames) at once, after the frames collected so far and past
        the send queue, which it never counts toward: for a writer paced by the socket, which
        writes only while the sink is not paused (see ``on_resume``)."""
        if self._closed:
            return
        self._flush_pending()
        self._write(data)

    cpdef pause(self):
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    cpdef resume(self):
        """The transport drained: write what waits, in order, in one write; then, while the
        transport still takes data, let ``on_resume`` go on."""
        cdef Py_ssize_t i
        cdef list frames
        self._paused = False
        self._flush_pending()
        if self._count:
            frames = []
            for i in range(self._count):
                frames.append(<object>self._frames[(self._head + i) % self.capacity])
            self._free_ring()
            if len(frames) == 1:
                self._write(frames[0])
            else:
                self._write(_EMPTY.join(frames))
        if self.on_resume is not None and not self._paused and not self._closed:
            self.on_resume()

    cpdef close(self, bint flush=True):
        """Stop writing and release the queue; first write what was already collected unless
        ``flush`` is false (the socket is gone). A writer waiting on ``on_resume`` is called
        once more, and finds the sink closed."""
        if self._closed:
            return
        if flush:
            self._flush_pending()
        self._pending = None
        self._closed = True
        self._free_ring()
        self._write = None
        self.owner = None
        waiting = self.on_resume
        self.on_resume = None
        if waiting is not None:  # a writer paced by the socket learns that it is gone
            waiting()


cdef class _Delivery:
    """One broadcast under way: its frames, built on the first receiver that needs them, and
    its tally. The plain frame is built once; a stream event's frame once per user, from one
    shared part and the user's offset."""

    cdef bytes payload
    cdef bytes frame
    cdef bint checked
    cdef bint droppable
    cdef Py_ssize_t reached
    cdef list overflowed
    cdef list behind

    cdef inline int send_all(self, list held, long long offset) except -1:
        """Send to one user's sinks; ``offset`` is the user's offset of the event, 0 = none."""
        cdef Py_ssize_t i, n = PyList_GET_SIZE(held)
        cdef Sink sink
        cdef bytes frame = None
        cdef long long last
        for i in range(n):
            sink = <Sink>PyList_GET_ITEM(held, i)
            if sink.catching_up:
                if offset > sink.seen:
                    sink.seen = offset
                continue
            if offset:
                last = sink.stream_last
                if last >= 0:
                    if offset <= last:  # written already
                        continue
                    if offset != last + 1:  # a gap: the sink catches up from its last
                        sink.catching_up = True
                        sink.seen = offset
                        if self.behind is None:
                            self.behind = []
                        self.behind.append(sink)
                        continue
                    sink.stream_last = offset
                if frame is None:
                    if not self.checked:
                        _check_stream_event(self.payload)
                        self.checked = True
                    frame = _offset_frame(self.payload, offset)
            elif frame is None:
                if self.frame is None:
                    self.frame = build_frame(self.payload)
                frame = self.frame
            if not sink.send(frame, self.droppable):
                if self.overflowed is None:
                    self.overflowed = []
                self.overflowed.append(sink)
            self.reached += 1
        return 0


cdef inline long long _offset_of(dict offsets, object user_id) except? -1:
    cdef PyObject* found
    if offsets is None:
        return 0
    found = PyDict_GetItem(offsets, user_id)
    return 0 if found == NULL else PyLong_AsLongLong(<object>found)


cpdef tuple deliver(dict users, user_ids, object exclude_user, bytes payload,
                    bint droppable=False, dict offsets=None):
    """Send ``payload`` to every sink of ``user_ids`` found in ``users`` (user id → list of
    sinks), skipping ``exclude_user``. A user found in ``offsets`` (user id → that user's
    offset of this stream event) gets it framed with the offset, once for all the user's sinks;
    every other user gets the one plain frame. A sink is written each offset once, in order: a
    repeated offset is skipped, and a sink that finds a gap before an offset is left out and
    listed in ``behind`` (it now catches up). Returns the number of sinks written, those that
    overflowed (or None), and those behind (or None)."""
    cdef PyObject* found
    cdef bint excluding = exclude_user is not None
    cdef _Delivery delivery = _Delivery.__new__(_Delivery)
    delivery.payload = payload
    delivery.droppable = droppable
    if len(user_ids) <= len(users):  # walk the smaller side
        for user_id in user_ids:
            found = PyDict_GetItem(users, user_id)
            if found != NULL and not (excluding and user_id == exclude_user):
                delivery.send_all(<list>found, _offset_of(offsets, user_id))
    else:
        for user_id, held in users.items():
            if not (excluding and user_id == exclude_user) and user_id in user_ids:
                delivery.send_all(<list>held, _offset_of(offsets, user_id))
    return delivery.reached, delivery.overflowed, delivery.behind


# --- per-user streams: the hot part of gogate.streams ----------------------------------------


cdef class Kept:
    """One kept stream event, shared by every stream that holds it: its name, its encoding,
    when it came, how many streams still hold it (``holders``) and the users whose streams took
    it (``receivers``, for expiry)."""

    def __cinit__(self, event, bytes payload, double at):
        self.event = event
        self.payload = payload
        self.at = at
        self.holders = 0
        self.receivers = None


cdef class StreamLog:
    """The kept events of one user's stream, oldest first, the newest at offset ``last``;
    at most ``size`` of them. ``epoch``, ``connections`` and ``expires`` are the store's."""

    def __cinit__(self, Py_ssize_t size, epoch):
        if size < 1:
            raise ValueError("a stream keeps at least one event")
        self._ring = NULL
        self._capacity = 0
        self._head = 0
        self._count = 0
        self.size = size
        self.epoch = epoch
        self.last = 0
        self.connections = 0
        self.expires = 0.0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._ring != NULL:
            for i in range(self._count):
                Py_DECREF(<object>self._ring[(self._head + i) % self._capacity])
            PyMem_Free(self._ring)

    def __len__(self):
        return self._count

    cdef int _grow(self) except -1:
        """Double the ring (up to ``size``), keeping the events in order from slot 0."""
        cdef Py_ssize_t capacity = min(self.size, max(4, 2 * self._capacity))
        cdef PyObject** ring = <PyObject**>PyMem_Malloc(capacity * sizeof(PyObject*))
        cdef Py_ssize_t i
        if ring == NULL:
            raise MemoryError()
        for i in range(self._count):
            ring[i] = self._ring[(self._head + i) % self._capacity]
        PyMem_Free(self._ring)
        self._ring = ring
        self._capacity = capacity
        self._head = 0
        return 0

    def push(self, Kept kept):
        """Keep ``kept`` as the newest event (at offset ``last`` + 1, which ``last`` becomes);
        returns the oldest one when it had to go to make room, else None."""
        return self._push(kept)

    cdef inline object _push(self, Kept kept):
        cdef object gone = None
        if self._count == self.size:
            gone = <object>self._ring[self._head]
            Py_DECREF(gone)  # the ring's reference; ``gone`` holds its own
            self._head = (self._head + 1) % self._capacity
            self._count -= 1
        elif self._count == self._capacity:
            self._grow()
        Py_INCREF(kept)
        self._ring[(self._head + self._count) % self._capacity] = <PyObject*>kept
        self._count += 1
        self.last += 1
        return gone

    @property
    def oldest(self):
        return None if self._count == 0 else <object>self._ring[self._head]

    cpdef Kept pop_oldest(self):
        if self._count == 0:
            raise IndexError("the stream keeps no event")
        cdef Kept kept = <Kept>self._ring[self._head]
        Py_DECREF(kept)
        self._head = (self._head + 1) % self._capacity
        self._count -= 1
        return kept

    cpdef list newest(self, Py_ssize_t count):
        """The newest ``count`` events (at most all), oldest first."""
        cdef Py_ssize_t i
        cdef list out = []
        count = min(max(count, 0), self._count)
        for i in range(self._count - count, self._count):
            out.append(<object>self._ring[(self._head + i) % self._capacity])
        return out


cdef extern from "Python.h":
    dict _PyDict_NewPresized(Py_ssize_t minused)


cpdef tuple append_all(dict streams, user_ids, Kept kept, bint unique):
    """Push ``kept`` onto the stream of every user of ``user_ids`` found in ``streams`` (each
    user once: ``unique`` says that ``user_ids`` repeats none), and name them in its
    ``receivers``. Returns user id → the offset it got, and the events that no stream holds any
    more (or None)."""
    cdef dict offsets = _PyDict_NewPresized(len(user_ids))
    cdef list dropped = None
    cdef PyObject* found
    cdef StreamLog stream
    cdef object gone
    cdef array.array receivers = array.clone(_NO_RECEIVERS, len(user_ids), zero=False)
    cdef long long* ids = receivers.data.as_longlongs
    cdef Py_ssize_t n = 0
    for user_id in user_ids:
        found = PyDict_GetItem(streams, user_id)
        if found == NULL or (not unique and user_id in offsets):
            continue
        stream = <StreamLog>found
        gone = stream._push(kept)
        offsets[user_id] = stream.last
        ids[n] = user_id
        n += 1
        if gone is not None:
            (<Kept>gone).holders -= 1
            if (<Kept>gone).holders == 0:
                if dropped is None:
                    dropped = []
                dropped.append(gone)
    array.resize(receivers, n)
    kept.receivers = receivers
    kept.holders = n
    return offsets, dropped
