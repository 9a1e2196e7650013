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

    cpdef bint send(self, bytes frame, bint droppable=*) except -1
    cdef inline void _collect(self, bytes frame) except *
    cdef void _collect_more(self, bytes frame) except *
    cdef bint _enqueue(self, bytes frame, bint droppable) except -1
    cdef bint _shed(self, Py_ssize_t size) except -1
    cdef inline bint _alloc_ring(self) except -1
    cdef inline void _free_ring(self) noexcept
    cdef void _flush_pending(self) except *
    cpdef flush(self)
    cpdef pause(self)
    cpdef resume(self)
    cpdef close(self, bint flush=*)


cpdef bytes build_frame(bytes payload)
cpdef tuple deliver(dict users, user_ids, object exclude_user, bytes payload, bint droppable=*)
