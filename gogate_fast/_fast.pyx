# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""The compiled hot path: server frames, coalescing per-connection sinks, and the fan-out loop.

``gogate_fast._pure`` is its twin, statement for statement: the same ring, the same shedding,
the same flush rules. The tests run against both.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.string cimport memcpy

cdef Py_ssize_t _live_sinks = 0
cdef Py_ssize_t _live_rings = 0
cdef Py_ssize_t _queued_frames = 0
cdef bytes _EMPTY = b""


def stats():
    """Live sinks, allocated send rings and the frames waiting in them: a leak shows as counts
    that do not return to 0 once the connections are gone."""
    return {"sinks": _live_sinks, "rings": _live_rings, "queued": _queued_frames}


cpdef bytes build_frame(bytes payload):
    """A final, unmasked text frame carrying ``payload``: valid for every receiver."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t header
    cdef unsigned char* out
    cdef unsigned long long length
    cdef int i
    if size < 126:
        header = 2
    elif size < 65536:
        header = 4
    else:
        header = 10
    frame = PyBytes_FromStringAndSize(NULL, header + size)
    out = <unsigned char*>PyBytes_AS_STRING(frame)
    out[0] = 0x81
    if header == 2:
        out[1] = <unsigned char>size
    elif header == 4:
        out[1] = 126
        out[2] = <unsigned char>((size >> 8) & 0xFF)
        out[3] = <unsigned char>(size & 0xFF)
    else:
        out[1] = 127
        length = <unsigned long long>size
        for i in range(8):
            out[9 - i] = <unsigned char>((length >> (8 * i)) & 0xFF)
    memcpy(out + header, PyBytes_AS_STRING(payload), size)
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

    cpdef pause(self):
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    cpdef resume(self):
        """The transport drained: write what waits, in order, in one write."""
        cdef Py_ssize_t i
        cdef list frames
        self._paused = False
        self._flush_pending()
        if self._count == 0:
            return
        frames = []
        for i in range(self._count):
            frames.append(<object>self._frames[(self._head + i) % self.capacity])
        self._free_ring()
        if len(frames) == 1:
            self._write(frames[0])
        else:
            self._write(_EMPTY.join(frames))

    cpdef close(self, bint flush=True):
        """Stop writing and release the queue; first write what was already collected unless
        ``flush`` is false (the socket is gone)."""
        if self._closed:
            return
        if flush:
            self._flush_pending()
        self._pending = None
        self._closed = True
        self._free_ring()
        self._write = None
        self.owner = None


cdef class _Delivery:
    """One broadcast under way: its frame, built on the first receiver, and its tally."""

    cdef bytes payload
    cdef bytes frame
    cdef bint droppable
    cdef Py_ssize_t reached
    cdef list overflowed

    cdef inline int send_all(self, list held) except -1:
        cdef Py_ssize_t i, n = PyList_GET_SIZE(held)
        cdef Sink sink
        if n and self.frame is None:
            self.frame = build_frame(self.payload)
        for i in range(n):
            sink = <Sink>PyList_GET_ITEM(held, i)
            if not sink.send(self.frame, self.droppable):
                if self.overflowed is None:
                    self.overflowed = []
                self.overflowed.append(sink)
        self.reached += n
        return 0


cpdef tuple deliver(dict users, user_ids, object exclude_user, bytes payload,
                    bint droppable=False):
    """Frame ``payload`` once and send it to every sink of ``user_ids`` found in ``users``
    (user id → list of sinks), skipping ``exclude_user``. Returns the number of sinks reached
    and the list of those that overflowed (or None)."""
    cdef PyObject* found
    cdef bint excluding = exclude_user is not None
    cdef _Delivery delivery = _Delivery.__new__(_Delivery)
    delivery.payload = payload
    delivery.droppable = droppable
    if len(user_ids) <= len(users):  # walk the smaller side
        for user_id in user_ids:
            found = PyDict_GetItem(users, user_id)
            if found != NULL and not (excluding and user_id == exclude_user):
                delivery.send_all(<list>found)
    else:
        for user_id, held in users.items():
            if not (excluding and user_id == exclude_user) and user_id in user_ids:
                delivery.send_all(<list>held)
    return delivery.reached, delivery.overflowed
