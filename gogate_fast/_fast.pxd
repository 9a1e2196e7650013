# Declarations of the compiled hot path (gogate_fast/_fast.pyx).

from cpython.object cimport PyObject


cdef class Flusher:
    cdef object _schedule
    cdef object _call_later
    cdef double _delay
    cdef list _dirty
    cdef bint _scheduled
    cdef object _flush_cb

    cdef inline void _mark(self, Sink sink) except *
    cpdef flush(self)


cdef class Sink:
    cdef object _write
    cdef Flusher _flusher
    cdef object _pending
    cdef PyObject** _frames
    cdef unsigned char* _droppable
    cdef Py_ssize_t _head
    cdef Py_ssize_t _count
    cdef bint _paused
    cdef bint _closed
    cdef bint _dirty
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t queued_bytes
    cdef public object owner
    cdef public object epoch
    cdef public long long stream_last
    cdef public long long seen
    cdef public bint catching_up
    cdef public object on_resume

    cpdef bint send(self, bytes frame, bint droppable=*) except -1
    cdef inline void _collect(self, bytes frame) except *
    cdef void _collect_more(self, bytes frame) except *
    cdef bint _enqueue(self, bytes frame, bint droppable) except -1
    cdef bint _shed(self, Py_ssize_t size) except -1
    cdef inline bint _alloc_ring(self) except -1
    cdef inline void _free_ring(self) noexcept
    cdef void _flush_pending(self) except *
    cpdef flush(self)
    cpdef write_now(self, bytes data)
    cpdef pause(self)
    cpdef resume(self)
    cpdef close(self, bint flush=*)


cpdef bytes build_frame(bytes payload, long long offset=*)
cpdef tuple deliver(dict users, user_ids, object exclude_user, bytes payload, bint droppable=*,
                    dict offsets=*)


cdef class Kept:
    cdef public object event
    cdef public bytes payload
    cdef public double at
    cdef public Py_ssize_t holders
    cdef public object receivers


cdef class StreamLog:
    cdef PyObject** _ring
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _head
    cdef Py_ssize_t _count
    cdef readonly Py_ssize_t size
    cdef public object epoch
    cdef public long long last
    cdef public Py_ssize_t connections
    cdef public double expires

    cdef int _grow(self) except -1
    cdef inline object _push(self, Kept kept)
    cpdef Kept pop_oldest(self)
    cpdef list newest(self, Py_ssize_t count)


cpdef tuple append_all(dict streams, user_ids, Kept kept, bint unique)
