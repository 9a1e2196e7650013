# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""The compiled hot path: server frames, coalescing per-connection sinks, and the fan-out loop.

It implements exactly the interface of ``gogate_fast._pure``; the tests run against both.
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
cdef bytes _EMPTY = b""


def stats():
    """Live sinks and allocated send rings: a leak shows as counts that never return to 0."""
    return {"sinks": _live_sinks, "rings": _live_rings}


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
    """Writes each sink's frames of one loop iteration in one write, once the iteration's
    callbacks have run. ``schedule`` is the loop's ``call_soon``."""

    def __cinit__(self, schedule):
        self._schedule = schedule
        self._dirty = []
        self._scheduled = False
        self._flush_cb = self.flush

    @property
    def pending(self):
        return len(self._dirty)

    cdef inline void _mark(self, Sink sink) except *:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self._flush_cb)

    cpdef flush(self):
        """Write every pending frame now."""
        cdef list dirty = self._dirty
        cdef Py_ssize_t i
        self._dirty = []
        self._scheduled = False
        for i in range(PyList_GET_SIZE(dirty)):
            (<Sink>PyList_GET_ITEM(dirty, i))._flush_pending()


cdef class Sink:
    """The outbound side of one connection.

    While the transport takes data, frames are written (coalesced per loop iteration when a
    :class:`Flusher` is given). While it is paused, they wait in order in a ring bounded by
    ``capacity`` frames and ``max_bytes`` bytes; a droppable frame (typing) is shed first, and
    when nothing can be shed :meth:`send` returns ``False`` for the owner to close the
    connection as a slow consumer.
    """

    def __cinit__(self, write, Py_ssize_t capacity, Py_ssize_t max_bytes, owner=None,
                  Flusher flusher=None):
        global _live_sinks
        _live_sinks += 1  # first: __dealloc__ runs even when the arguments are refused
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be positive")
        self._write = write
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.owner = owner
        self._flusher = flusher
        self._pending = None
        self._frames = NULL
        self._droppable = NULL
        self._head = 0
        self._count = 0
        self.queued_bytes = 0
        self._paused = False
        self._closed = False
        self._dirty = False

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

    @property
    def queued(self):
        return self._count

    cdef inline void _free_ring(self) noexcept:
        global _live_rings
        cdef Py_ssize_t i
        if self._frames != NULL:
            for i in range(self._count):
                Py_DECREF(<object>self._frames[(self._head + i) % self.capacity])
            PyMem_Free(self._frames)
            PyMem_Free(self._droppable)
            self._frames = NULL
            self._droppable = NULL
            self._count = 0
            self._head = 0
            self.queued_bytes = 0
            _live_rings -= 1

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

    cpdef bint send(self, bytes frame, bint droppable=False) except -1:
        """Write, coalesce or queue ``frame``; ``False`` means the queue overflowed."""
        if self._closed:
            return True
        if not self._paused:
            if self._flusher is None:
                self._write(frame)
                return True
            self._add_pending(frame)
            return True
        return self._enqueue(frame, droppable)

    cdef inline void _add_pending(self, bytes frame) except *:
        pending = self._pending
        if pending is None:
            self._pending = frame
            if not self._dirty:
                self._dirty = True
                self._flusher._mark(self)
        elif type(pending) is bytes:
            self._pending = [pending, frame]
        else:
            (<list>pending).append(frame)

    cdef bint _enqueue(self, bytes frame, bint droppable) except -1:
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
        return True

    cdef bint _shed(self, Py_ssize_t size) except -1:
        """Drop queued droppable frames, oldest first, until a frame of ``size`` bytes fits;
        ``False`` (and nothing dropped) when it cannot fit."""
        cdef Py_ssize_t count = self._count
        cdef Py_ssize_t queued = self.queued_bytes
        cdef Py_ssize_t i, slot, write_at, kept
        cdef Py_ssize_t cap = self.capacity
        cdef PyObject* item
        # First pass: can shedding make room?
        for i in range(self._count):
            if count < cap and queued + size <= self.max_bytes:
                break
            slot = (self._head + i) % cap
            if self._droppable[slot]:
                count -= 1
                queued -= PyBytes_GET_SIZE(<bytes>self._frames[slot])
        if count >= cap or queued + size > self.max_bytes:
            return False
        # Second pass: drop the same frames, compacting the ring in order.
        count = self._count
        queued = self.queued_bytes
        kept = 0
        for i in range(self._count):
            slot = (self._head + i) % cap
            item = self._frames[slot]
            if self._droppable[slot] and (count >= cap or queued + size > self.max_bytes):
                count -= 1
                queued -= PyBytes_GET_SIZE(<bytes>item)
                Py_DECREF(<object>item)
                continue
            write_at = (self._head + kept) % cap
            self._frames[write_at] = item
            self._droppable[write_at] = self._droppable[slot]
            kept += 1
        self._count = kept
        self.queued_bytes = queued
        return True

    cdef void _flush_pending(self) except *:
        pending = self._pending
        self._dirty = False
        if pending is None:
            return
        self._pending = None
        if self._closed and self._write is None:
            return
        if type(pending) is bytes:
            self._write(pending)
        else:
            self._write(_EMPTY.join(<list>pending))

    cpdef flush(self):
        """Write this sink's coalesced frames now (before a close frame, say)."""
        self._flush_pending()

    cpdef pause(self):
        """The transport is above its high-water mark: queue from now on."""
        self._paused = True

    cpdef resume(self):
        """The transport drained: write what waits, in order, in one write."""
        cdef Py_ssize_t i, slot
        cdef list frames
        self._paused = False
        self._flush_pending()
        if self._count == 0 or self._closed:
            return
        frames = []
        for i in range(self._count):
            slot = (self._head + i) % self.capacity
            frames.append(<object>self._frames[slot])
        self._free_ring()
        if len(frames) == 1:
            self._write(frames[0])
        else:
            self._write(_EMPTY.join(frames))

    cpdef close(self, bint flush=True):
        """Stop writing and release the queue; first write what was already coalesced unless
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


cpdef list fanout(bytes frame, sinks, bint droppable=False):
    """Send one frame to many sinks without waiting on any; return those that overflowed."""
    cdef list overflowed = []
    cdef Sink sink
    for sink in sinks:
        if not sink.send(frame, droppable):
            overflowed.append(sink)
    return overflowed


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
