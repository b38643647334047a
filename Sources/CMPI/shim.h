// Open MPI's handles are macros that Swift cannot import (casts of addresses of globals): functions give them.
#include <mpi.h>

static inline MPI_Comm swiftgpt_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype swiftgpt_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype swiftgpt_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype swiftgpt_mpi_int(void) { return MPI_INT; }
static inline MPI_Datatype swiftgpt_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op swiftgpt_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op swiftgpt_mpi_max(void) { return MPI_MAX; }
static inline void *swiftgpt_mpi_in_place(void) { return MPI_IN_PLACE; }
