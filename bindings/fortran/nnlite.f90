! nnlite.f90 - Fortran 2018 module over nnlite's C ABI (ISO_C_BINDING).
!
!   use nnlite
!   type(nnl_model) :: model
!   real(c_float) :: x(784, 60000), p(10, 60000)      ! x(features, samples)
!   integer(c_int64_t) :: y(60000)                      ! class ids
!   call model%create(seed=42)
!   call model%add("Dense(128, activation='relu', input_shape=(784,))")
!   call model%add("Dense(10, activation='softmax')")
!   call model%compile("adam", "sparse_categorical_crossentropy", "accuracy")
!   call model%fit(x, y, epochs=5, batch_size=32, validation_split=0.1)
!   call model%predict(x, p)
!   call model%save("mlp.nnl")
!   call model%free()
!
! ARRAYS. Fortran stores x(features, samples) column-major: that is exactly
! C's row-major (samples, features), the layout nnlite wants. Arrays are
! passed to the library by address, without copies (assumed-shape,
! CONTIGUOUS; a non-contiguous section is copied in by the compiler). Images
! are x(channels, width, height, samples) for nnlite's channels-last
! (samples, height, width, channels), i.e. every shape is reversed. Any rank
! works (assumed-rank dummies).
!
! ERRORS. Every procedure takes an optional integer `status`: present, it
! receives NNL_OK or an NNL_ERR_* code and the message is nnl_error_message()
! (nnlite's C message, "nnl_fit: ..."); absent, a failure stops the program
! (error stop) printing the message named by the Fortran call that failed:
! "nnlite: model%fit: the model is not compiled: call model%compile first".
!
! VERSION. The first create/load calls nnl_init with this module's version
! (NNL_VERSION_NUMBER below, kept equal to nnlite.h's by the test suite): a
! library of another ABI major version is refused with a clear message.
!
! The C handle is not freed automatically (no finalizer: a Fortran assignment
! would copy the handle and free it twice): call model%free().
!
! MPI (a library built with MPI=1): every rank trains a replica, gradients
! are averaged over the ranks, the replicas stay equal (nnlite.h, "Data-
! parallel training over MPI"). The module itself does not use mpi; pass the
! communicator's integer handle (comm%MPI_VAL with mpi_f08):
!   use mpi
!   call MPI_Init_thread(MPI_THREAD_FUNNELED, provided, ierr)
!   ... create, add, compile ...
!   call model%distribute(MPI_COMM_WORLD, NNL_DATA_LOCAL)   ! each rank its own data
!   call model%fit(x, y, epochs=5, batch_size=32)            ! collective
!   call model%free()                                        ! before MPI_Finalize
!   call MPI_Finalize(ierr)
module nnlite
    use, intrinsic :: iso_c_binding
    use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
    implicit none
    private

    integer, parameter, public :: NNL_VERSION_MAJOR = 0, NNL_VERSION_MINOR = 8, NNL_VERSION_PATCH = 3
    integer, parameter, public :: NNL_VERSION_NUMBER = &
        NNL_VERSION_MAJOR * 10000 + NNL_VERSION_MINOR * 100 + NNL_VERSION_PATCH
    integer, parameter, public :: NNL_OK = 0, NNL_ERR_ARGUMENT = 1, NNL_ERR_SHAPE = 2, NNL_ERR_STATE = 3, &
        NNL_ERR_IO = 4, NNL_ERR_FORMAT = 5, NNL_ERR_MEMORY = 6, NNL_ERR_UNSUPPORTED = 7, &
        NNL_ERR_NUMERIC = 8, NNL_ERR_INTERNAL = 9, NNL_ERR_DISTRIBUTED = 10, &
        NNL_ERR_DEVICE = 11
    ! model%distribute's flags (nnlite.h): data sharded or each rank's own, plus
    ! NNL_GLOBAL_BATCH (batch_size is the step's total, not per rank) and
    ! NNL_SYNC_BATCHNORM (BatchNormalization's statistics over all ranks)
    integer, parameter, public :: NNL_DATA_SHARDED = 0, NNL_DATA_LOCAL = 1, NNL_GLOBAL_BATCH = 2, &
        NNL_SYNC_BATCHNORM = 4
    integer(c_int), parameter :: NNL_FLOAT32 = 1, NNL_INT32 = 3, NNL_INT64 = 4

    public :: c_float, c_double, c_int, c_int32_t, c_int64_t
    public :: nnl_initialize, nnl_error_message, nnl_library_version, nnl_set_threads, nnl_load_mnist, nnl_cuda_device_count
    public :: nnl_has_feature, nnl_build_info, nnl_sliding_windows
    public :: nnl_load_image, nnl_image_dataset_from_directory, nnl_save_image
    public :: nnl_mpi_init, nnl_mpi_finalize

    !> A Sequential model: the handle of a C nnl_model.
    type, public :: nnl_model
        type(c_ptr) :: handle = c_null_ptr
    contains
        procedure :: create => model_create
        procedure :: free => model_free
        procedure :: is_valid => model_is_valid
        procedure :: add => model_add
        procedure :: set_seed => model_set_seed
        procedure :: reset_states => model_reset_states
        procedure :: set_device => model_set_device
        procedure :: set_precision => model_set_precision
        procedure :: precision => model_precision
        procedure :: compile => model_compile
        procedure, private :: fit_f32, fit_i32, fit_i64
        generic :: fit => fit_f32, fit_i32, fit_i64
        procedure, private :: evaluate_f32, evaluate_i32, evaluate_i64
        generic :: evaluate => evaluate_f32, evaluate_i32, evaluate_i64
        procedure, private :: model_predict, model_predict_ids
        generic :: predict => model_predict, model_predict_ids
        procedure :: predict_classes => model_predict_classes
        procedure :: summary => model_summary
        procedure :: param_count => model_param_count
        procedure :: trainable_param_count => model_trainable_param_count
        procedure :: non_trainable_param_count => model_non_trainable_param_count
        procedure :: weight_count => model_weight_count
        procedure :: weight_shape => model_weight_shape
        procedure :: weight_name => model_weight_name
        procedure :: weight_trainable => model_weight_trainable
        procedure :: get_weight => model_get_weight
        procedure :: set_weight => model_set_weight
        procedure :: history => model_history
        procedure :: learning_rate => model_learning_rate
        procedure :: set_learning_rate => model_set_learning_rate
        procedure :: save => model_save
        procedure :: load => model_load
        procedure :: save_weights => model_save_weights
        procedure :: load_weights => model_load_weights
        procedure :: to_json => model_to_json
        procedure :: from_json => model_from_json
        procedure :: distribute => model_distribute
        procedure :: mpi_rank => model_mpi_rank
        procedure :: scale_learning_rate => model_scale_learning_rate
    end type nnl_model

    ! nnl_fit_options of nnlite.h, and room for a newer library's longer one
    type, bind(C) :: c_fit_options
        integer(c_int) :: struct_size, epochs, batch_size
        real(c_double) :: validation_split
        integer(c_int) :: shuffle, verbose
        integer(c_int64_t) :: seed
        integer(c_int) :: initial_epoch
        type(c_ptr) :: x_val
        integer(c_int) :: x_val_rank
        type(c_ptr) :: x_val_shape, y_val
        integer(c_int) :: y_val_dtype, y_val_rank
        type(c_ptr) :: y_val_shape
        type(c_funptr) :: callback
        type(c_ptr) :: callback_user, log
    end type c_fit_options
    type, bind(C) :: c_fit_buffer
        type(c_fit_options) :: o
        integer(c_int64_t) :: room(64)
    end type c_fit_buffer

    logical, save :: initialised = .false.

    interface
        function c_strlen(s) bind(C, name="strlen")
            import :: c_ptr, c_size_t
            type(c_ptr), value :: s
            integer(c_size_t) :: c_strlen
        end function
        function c_fflush(f) bind(C, name="fflush")
            import :: c_ptr, c_int
            type(c_ptr), value :: f
            integer(c_int) :: c_fflush
        end function
        function c_last_error() bind(C, name="nnl_last_error")
            import :: c_ptr
            type(c_ptr) :: c_last_error
        end function
        function c_version() bind(C, name="nnl_version")
            import :: c_ptr
            type(c_ptr) :: c_version
        end function
        function c_has_feature(name) bind(C, name="nnl_has_feature")
            import :: c_int, c_char
            character(kind=c_char), dimension(*) :: name
            integer(c_int) :: c_has_feature
        end function
        function c_build_info() bind(C, name="nnl_build_info")
            import :: c_ptr
            type(c_ptr) :: c_build_info
        end function
        function c_init(v) bind(C, name="nnl_init")
            import :: c_int
            integer(c_int), value :: v
            integer(c_int) :: c_init
        end function
        function c_set_threads(n) bind(C, name="nnl_set_threads")
            import :: c_int
            integer(c_int), value :: n
            integer(c_int) :: c_set_threads
        end function
        function c_model_create() bind(C, name="nnl_model_create")
            import :: c_ptr
            type(c_ptr) :: c_model_create
        end function
        subroutine c_model_free(m) bind(C, name="nnl_model_free")
            import :: c_ptr
            type(c_ptr), value :: m
        end subroutine
        function c_add(m, spec) bind(C, name="nnl_add")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: spec
            integer(c_int) :: c_add
        end function
        function c_set_device(m, dev) bind(C, name="nnl_set_device")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: dev
            integer(c_int) :: c_set_device
        end function
        function c_set_precision(m, policy) bind(C, name="nnl_set_precision")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: policy
            integer(c_int) :: c_set_precision
        end function
        function c_get_precision(m) bind(C, name="nnl_get_precision")
            import :: c_ptr
            type(c_ptr), value :: m
            type(c_ptr) :: c_get_precision
        end function
        function c_cuda_device_count() bind(C, name="nnl_cuda_device_count")
            import :: c_int
            integer(c_int) :: c_cuda_device_count
        end function
        function c_set_seed(m, seed) bind(C, name="nnl_model_set_seed")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m
            integer(c_int64_t), value :: seed
            integer(c_int) :: c_set_seed
        end function
        function c_reset_states(m) bind(C, name="nnl_reset_states")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int) :: c_reset_states
        end function
        function c_compile(m, opt, loss, metrics) bind(C, name="nnl_compile")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: opt, loss, metrics
            integer(c_int) :: c_compile
        end function
        subroutine c_fit_options_init(o) bind(C, name="nnl_fit_options_init")
            import :: c_ptr
            type(c_ptr), value :: o
        end subroutine
        function c_fit(m, x, xr, xs, y, yd, yr, ys, o) bind(C, name="nnl_fit")
            import :: c_ptr, c_int
            type(c_ptr), value :: m, x, xs, y, ys, o
            integer(c_int), value :: xr, yd, yr
            integer(c_int) :: c_fit
        end function
        function c_evaluate(m, x, xr, xs, y, yd, yr, ys, bs, out, cap) bind(C, name="nnl_evaluate")
            import :: c_ptr, c_int
            type(c_ptr), value :: m, x, xs, y, ys, out
            integer(c_int), value :: xr, yd, yr, bs, cap
            integer(c_int) :: c_evaluate
        end function
        function c_predict(m, x, xr, xs, bs, out, n) bind(C, name="nnl_predict")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m, x, xs, out
            integer(c_int), value :: xr, bs
            integer(c_int64_t), value :: n
            integer(c_int) :: c_predict
        end function
        function c_predict_typed(m, x, xd, xr, xs, bs, out, n) bind(C, name="nnl_predict_typed")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m, x, xs, out
            integer(c_int), value :: xd, xr, bs
            integer(c_int64_t), value :: n
            integer(c_int) :: c_predict_typed
        end function
        function c_predict_classes(m, x, xr, xs, bs, out, n) bind(C, name="nnl_predict_classes")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m, x, xs, out
            integer(c_int), value :: xr, bs
            integer(c_int64_t), value :: n
            integer(c_int) :: c_predict_classes
        end function
        function c_summary(m, f) bind(C, name="nnl_summary")
            import :: c_ptr, c_int
            type(c_ptr), value :: m, f
            integer(c_int) :: c_summary
        end function
        function c_param_count(m) bind(C, name="nnl_param_count")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: m
            integer(c_int64_t) :: c_param_count
        end function
        function c_trainable_param_count(m) bind(C, name="nnl_trainable_param_count")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: m
            integer(c_int64_t) :: c_trainable_param_count
        end function
        function c_non_trainable_param_count(m) bind(C, name="nnl_non_trainable_param_count")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: m
            integer(c_int64_t) :: c_non_trainable_param_count
        end function
        function c_weight_count(m) bind(C, name="nnl_weight_count")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int) :: c_weight_count
        end function
        function c_weight_trainable(m, i, t) bind(C, name="nnl_weight_trainable")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int), value :: i
            integer(c_int) :: t
            integer(c_int) :: c_weight_trainable
        end function
        function c_weight_info(m, i, name, cap, rank, shape) bind(C, name="nnl_weight_info")
            import :: c_ptr, c_int
            type(c_ptr), value :: m, name, shape
            integer(c_int), value :: i, cap
            integer(c_int) :: rank
            integer(c_int) :: c_weight_info
        end function
        function c_get_weight(m, i, out, n) bind(C, name="nnl_get_weight")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m, out
            integer(c_int), value :: i
            integer(c_int64_t), value :: n
            integer(c_int) :: c_get_weight
        end function
        function c_set_weight(m, i, in, n) bind(C, name="nnl_set_weight")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: m, in
            integer(c_int), value :: i
            integer(c_int64_t), value :: n
            integer(c_int) :: c_set_weight
        end function
        function c_history_get(m, key, out, cap) bind(C, name="nnl_history_get")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m, out
            character(kind=c_char), dimension(*) :: key
            integer(c_int), value :: cap
            integer(c_int) :: c_history_get
        end function
        function c_get_lr(m) bind(C, name="nnl_get_learning_rate")
            import :: c_ptr, c_double
            type(c_ptr), value :: m
            real(c_double) :: c_get_lr
        end function
        function c_set_lr(m, lr) bind(C, name="nnl_set_learning_rate")
            import :: c_ptr, c_double, c_int
            type(c_ptr), value :: m
            real(c_double), value :: lr
            integer(c_int) :: c_set_lr
        end function
        function c_save_model(m, path) bind(C, name="nnl_save_model")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: path
            integer(c_int) :: c_save_model
        end function
        function c_load_model(path, out) bind(C, name="nnl_load_model")
            import :: c_ptr, c_int, c_char
            character(kind=c_char), dimension(*) :: path
            type(c_ptr) :: out
            integer(c_int) :: c_load_model
        end function
        function c_save_weights(m, path) bind(C, name="nnl_save_weights")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: path
            integer(c_int) :: c_save_weights
        end function
        function c_load_weights(m, path) bind(C, name="nnl_load_weights")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: path
            integer(c_int) :: c_load_weights
        end function
        function c_save_weights_npz(m, path) bind(C, name="nnl_save_weights_npz")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: path
            integer(c_int) :: c_save_weights_npz
        end function
        function c_load_weights_npz(m, path) bind(C, name="nnl_load_weights_npz")
            import :: c_ptr, c_int, c_char
            type(c_ptr), value :: m
            character(kind=c_char), dimension(*) :: path
            integer(c_int) :: c_load_weights_npz
        end function
        function c_to_json(m, buf, cap) bind(C, name="nnl_model_to_json")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: m, buf
            integer(c_int64_t), value :: cap
            integer(c_int64_t) :: c_to_json
        end function
        function c_from_json(json, out) bind(C, name="nnl_model_from_json")
            import :: c_ptr, c_int, c_char
            character(kind=c_char), dimension(*) :: json
            type(c_ptr) :: out
            integer(c_int) :: c_from_json
        end function
        function c_load_mnist(path, xtr, ytr, xte, yte) bind(C, name="nnl_load_mnist")
            import :: c_ptr, c_int, c_char
            character(kind=c_char), dimension(*) :: path
            type(c_ptr) :: xtr, ytr, xte, yte
            integer(c_int) :: c_load_mnist
        end function
        function c_sliding_windows(series, n, features, window, x, y) bind(C, name="nnl_sliding_windows")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: series
            integer(c_int64_t), value :: n, features, window
            type(c_ptr) :: x, y
            integer(c_int) :: c_sliding_windows
        end function
        function c_mpi_init(argc, argv) bind(C, name="nnl_mpi_init")
            import :: c_ptr, c_int
            type(c_ptr), value :: argc, argv
            integer(c_int) :: c_mpi_init
        end function
        function c_mpi_finalize() bind(C, name="nnl_mpi_finalize")
            import :: c_int
            integer(c_int) :: c_mpi_finalize
        end function
        function c_distribute(m, comm, flags) bind(C, name="nnl_distribute")
            import :: c_ptr, c_int
            type(c_ptr), value :: m, comm
            integer(c_int), value :: flags
            integer(c_int) :: c_distribute
        end function
        function c_distribute_f(m, comm, flags) bind(C, name="nnl_distribute_f")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int), value :: comm, flags
            integer(c_int) :: c_distribute_f
        end function
        function c_mpi_rank(m, rank, size) bind(C, name="nnl_mpi_rank")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int) :: rank, size
            integer(c_int) :: c_mpi_rank
        end function
        function c_scale_lr(m) bind(C, name="nnl_scale_learning_rate")
            import :: c_ptr, c_int
            type(c_ptr), value :: m
            integer(c_int) :: c_scale_lr
        end function
        function c_load_image(path, channels, height, width, scale, out) bind(C, name="nnl_load_image")
            import :: c_ptr, c_int, c_char, c_float
            character(kind=c_char), dimension(*) :: path
            integer(c_int), value :: channels, height, width
            real(c_float), value :: scale
            type(c_ptr) :: out
            integer(c_int) :: c_load_image
        end function
        function c_image_dataset(dir, height, width, channels, scale, shuffle, seed, split, subset, skip_bad, &
                                 x, y, names) bind(C, name="nnl_image_dataset_from_directory")
            import :: c_ptr, c_int, c_char, c_float, c_double, c_int64_t
            character(kind=c_char), dimension(*) :: dir
            integer(c_int), value :: height, width, channels, shuffle, skip_bad
            real(c_float), value :: scale
            integer(c_int64_t), value :: seed
            real(c_double), value :: split
            type(c_ptr), value :: subset
            type(c_ptr) :: x, y, names
            integer(c_int) :: c_image_dataset
        end function
        function c_save_image(path, pixels, height, width, channels, scale) bind(C, name="nnl_save_image")
            import :: c_ptr, c_int, c_char, c_float
            character(kind=c_char), dimension(*) :: path
            type(c_ptr), value :: pixels
            integer(c_int), value :: height, width, channels
            real(c_float), value :: scale
            integer(c_int) :: c_save_image
        end function
        subroutine c_vocab_free(v) bind(C, name="nnl_vocab_free")
            import :: c_ptr
            type(c_ptr), value :: v
        end subroutine
        function c_vocab_size(v) bind(C, name="nnl_vocab_size")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: v
            integer(c_int64_t) :: c_vocab_size
        end function
        function c_vocab_word(v, id) bind(C, name="nnl_vocab_word")
            import :: c_ptr, c_int64_t
            type(c_ptr), value :: v
            integer(c_int64_t), value :: id
            type(c_ptr) :: c_vocab_word
        end function
        subroutine c_array_free(a) bind(C, name="nnl_array_free")
            import :: c_ptr
            type(c_ptr), value :: a
        end subroutine
        function c_array_rank(a) bind(C, name="nnl_array_rank")
            import :: c_ptr, c_int
            type(c_ptr), value :: a
            integer(c_int) :: c_array_rank
        end function
        function c_array_dim(a, axis) bind(C, name="nnl_array_dim")
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: a
            integer(c_int), value :: axis
            integer(c_int64_t) :: c_array_dim
        end function
        function c_array_data(a) bind(C, name="nnl_array_data")
            import :: c_ptr
            type(c_ptr), value :: a
            type(c_ptr) :: c_array_data
        end function
    end interface

contains

    ! ---- strings and errors ----

    function cstr(s) result(c)
        character(len=*), intent(in) :: s
        character(kind=c_char, len=len_trim(s) + 1) :: c
        c = trim(s) // c_null_char
    end function

    function fstr(p) result(s)
        type(c_ptr), intent(in) :: p
        character(len=:), allocatable :: s
        character(kind=c_char), pointer :: chars(:)
        integer :: i, n
        if (.not. c_associated(p)) then
            s = ""
            return
        end if
        n = int(c_strlen(p))
        call c_f_pointer(p, chars, [n])
        allocate (character(len=n) :: s)
        do i = 1, n
            s(i:i) = chars(i)
        end do
    end function

    !> nnlite's message for the last failing call on this thread.
    function nnl_error_message() result(msg)
        character(len=:), allocatable :: msg
        msg = fstr(c_last_error())
    end function

    !> The library's version, "MAJOR.MINOR.PATCH".
    function nnl_library_version() result(v)
        character(len=:), allocatable :: v
        v = fstr(c_version())
    end function

    !> s with every `from` replaced by `to`.
    function replace_all(s, from, to) result(r)
        character(len=*), intent(in) :: s, from, to
        character(len=:), allocatable :: r
        integer :: i, at
        r = ""
        at = 1
        do
            i = index(s(at:), from)
            if (i == 0) exit
            r = r // s(at:at + i - 2) // to
            at = at + i - 1 + len(from)
        end do
        r = r // s(at:)
    end function

    !> The text a failing call without `status` prints before stopping:
    !> nnlite's message named by the Fortran call, "nnlite: model%fit: the
    !> model is not compiled: call model%compile first" (the C function's own
    !> prefix, "nnl_fit: ", is dropped: one prefix, the caller's).
    function error_text(what, message) result(t)
        character(len=*), intent(in) :: what, message
        character(len=:), allocatable :: t, m
        integer :: i
        m = message
        i = index(m, ": ")
        if (i > 5) then
            if (m(1:4) == "nnl_") then
                if (verify(m(5:i - 1), "abcdefghijklmnopqrstuvwxyz0123456789_") == 0) m = m(i + 2:)
            end if
        end if
        m = replace_all(m, "nnl_compile", "model%compile")
        m = replace_all(m, "nnl_model_set_seed", "model%create(seed=...)")
        m = replace_all(m, "nnl_reset_states", "model%reset_states")
        t = "nnlite: " // what // ": " // m
    end function

    !> Whether the library has a feature: "stb", "threads",
    !> "cuda" (compiled in), "mpi", "hdf5", "avx2", "avx512f" (used on this
    !> CPU). .false. for a name it does not know (nnl_error_message() says so).
    logical function nnl_has_feature(name)
        character(len=*), intent(in) :: name
        nnl_has_feature = c_has_feature(cstr(name)) == 1
    end function

    !> One line describing the library's build ("nnlite 0.8.3; ...; threads: yes ...").
    function nnl_build_info() result(v)
        character(len=:), allocatable :: v
        v = fstr(c_build_info())
    end function

    subroutine finish(rc, status, what)
        integer(c_int), intent(in) :: rc
        integer, intent(out), optional :: status
        character(len=*), intent(in) :: what
        if (present(status)) then
            status = int(rc)
        else if (rc /= NNL_OK) then
            flush (output_unit)
            write (error_unit, '(a)') error_text(what, nnl_error_message())
            flush (error_unit)
            error stop 1
        end if
    end subroutine

    subroutine flush_all()
        integer(c_int) :: rc
        flush (output_unit)
        rc = c_fflush(c_null_ptr)
    end subroutine

    !> The nnl_init version handshake (done by the first create or load):
    !> refuses a library whose ABI major version differs from this module's.
    subroutine nnl_initialize(status, header_version)
        integer, intent(out), optional :: status
        integer, intent(in), optional :: header_version
        integer(c_int) :: v, rc
        v = NNL_VERSION_NUMBER
        if (present(header_version)) v = int(header_version, c_int)
        rc = c_init(v)
        if (rc == NNL_OK .and. .not. present(header_version)) initialised = .true.
        call finish(rc, status, "nnl_initialize")
    end subroutine

    subroutine ensure_init(status)
        integer, intent(out), optional :: status
        if (present(status)) status = NNL_OK
        if (.not. initialised) call nnl_initialize(status)
    end subroutine

    !> Threads the kernels use (n <= 0: NNL_NUM_THREADS, OMP_NUM_THREADS or all cores).
    subroutine nnl_set_threads(n)
        integer, intent(in) :: n
        integer(c_int) :: rc
        rc = c_set_threads(int(n, c_int))
    end subroutine

    ! ---- the model ----

    !> Creates an empty model (frees one the variable held). seed: reproducible weights.
    subroutine model_create(self, seed, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(in), optional :: seed
        integer, intent(out), optional :: status
        integer :: st
        call ensure_init(st)
        if (st /= NNL_OK) then
            if (present(status)) status = st
            return
        end if
        call self%free()
        self%handle = c_model_create()
        if (.not. c_associated(self%handle)) then
            call finish(int(NNL_ERR_MEMORY, c_int), status, "model%create")
            return
        end if
        if (present(seed)) then
            call finish(c_set_seed(self%handle, int(seed, c_int64_t)), status, "model%create")
        else
            if (present(status)) status = NNL_OK
        end if
    end subroutine

    !> Frees the C model (no-op when none).
    subroutine model_free(self)
        class(nnl_model), intent(inout) :: self
        if (c_associated(self%handle)) call c_model_free(self%handle)
        self%handle = c_null_ptr
    end subroutine

    logical function model_is_valid(self)
        class(nnl_model), intent(in) :: self
        model_is_valid = c_associated(self%handle)
    end function

    !> Appends a layer in Keras' call syntax, e.g. "Dense(64, activation='tanh', input_shape=(2,))".
    subroutine model_add(self, spec, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: spec
        integer, intent(out), optional :: status
        call finish(c_add(self%handle, cstr(spec)), status, 'model%add("' // trim(spec) // '")')
    end subroutine

    !> "cpu", "cuda" or "cuda:N" ("gpu", "gpu:N" alike; nnl_set_device): the model, its optimizer
    !> state and workspaces move there once. NNL_ERR_UNSUPPORTED where the
    !> library has no CUDA or the machine no GPU; the model then stays on the CPU.
    subroutine model_set_device(self, device, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: device
        integer, intent(out), optional :: status
        call finish(c_set_device(self%handle, cstr(device)), status, 'model%set_device("' // trim(device) // '")')
    end subroutine

    !> Keras' dtype policy (nnl_set_precision, since 0.6): "float32" (the default) or
    !> "mixed_bfloat16" (the layers' matrix products on bfloat16 operands, float32
    !> sums; weights and optimizer state stay float32). NNL_ERR_UNSUPPORTED on a CPU
    !> without AVX512-BF16 (nnl_has_feature("bf16")), NNL_ERR_ARGUMENT for other
    !> names; the policy is then unchanged. Any time, before or after compile.
    subroutine model_set_precision(self, policy, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: policy
        integer, intent(out), optional :: status
        call finish(c_set_precision(self%handle, cstr(policy)), status, &
                    'model%set_precision("' // trim(policy) // '")')
    end subroutine

    !> The model's dtype policy: "float32" or "mixed_bfloat16".
    function model_precision(self) result(p)
        class(nnl_model), intent(in) :: self
        character(len=:), allocatable :: p
        p = fstr(c_get_precision(self%handle))
    end function

    !> Number of CUDA devices nnlite can use (0 without CUDA or GPU).
    integer function nnl_cuda_device_count()
        nnl_cuda_device_count = int(c_cuda_device_count())
    end function

    subroutine model_set_seed(self, seed, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(in) :: seed
        integer, intent(out), optional :: status
        call finish(c_set_seed(self%handle, int(seed, c_int64_t)), status, "model%set_seed")
    end subroutine

    !> Keras' reset_states(): the states of stateful recurrent layers back to zero.
    subroutine model_reset_states(self, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(out), optional :: status
        call finish(c_reset_states(self%handle), status, "model%reset_states")
    end subroutine

    !> optimizer and loss as nnlite.h lists them; metrics comma-separated (optional).
    subroutine model_compile(self, optimizer, loss, metrics, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: optimizer, loss
        character(len=*), intent(in), optional :: metrics
        integer, intent(out), optional :: status
        if (present(metrics)) then
            call finish(c_compile(self%handle, cstr(optimizer), cstr(loss), cstr(metrics)), status, "model%compile")
        else
            call finish(c_compile(self%handle, cstr(optimizer), cstr(loss), cstr("")), status, "model%compile")
        end if
    end subroutine

    ! C shape (row-major) of a Fortran array: the reversed Fortran shape.
    subroutine c_shape_of(fshape, cs)
        integer, intent(in) :: fshape(:)
        integer(c_int64_t), intent(out) :: cs(:)
        integer :: i, r
        r = size(fshape)
        do i = 1, r
            cs(i) = int(fshape(r + 1 - i), c_int64_t)
        end do
    end subroutine

    subroutine fit_any(self, x, xshape, y, yshape, ydtype, epochs, batch_size, validation_split, shuffle, &
                       verbose, seed, initial_epoch, status)
        class(nnl_model), intent(inout) :: self
        type(c_ptr), intent(in) :: x, y
        integer, intent(in) :: xshape(:), yshape(:)
        integer(c_int), intent(in) :: ydtype
        integer, intent(in), optional :: epochs, batch_size, verbose, seed, initial_epoch
        real, intent(in), optional :: validation_split
        logical, intent(in), optional :: shuffle
        integer, intent(out), optional :: status
        type(c_fit_buffer), target :: buf
        integer(c_int64_t), target :: xs(max(1, size(xshape))), ys(max(1, size(yshape)))
        call c_fit_options_init(c_loc(buf))
        buf%o%struct_size = int(c_sizeof(buf%o), c_int)
        if (present(epochs)) buf%o%epochs = int(epochs, c_int)
        if (present(batch_size)) buf%o%batch_size = int(batch_size, c_int)
        if (present(validation_split)) buf%o%validation_split = real(validation_split, c_double)
        if (present(shuffle)) buf%o%shuffle = merge(1_c_int, 0_c_int, shuffle)
        if (present(verbose)) buf%o%verbose = int(verbose, c_int)
        if (present(seed)) buf%o%seed = int(seed, c_int64_t)
        if (present(initial_epoch)) buf%o%initial_epoch = int(initial_epoch, c_int)
        call c_shape_of(xshape, xs)
        call c_shape_of(yshape, ys)
        call flush_all()
        call finish(c_fit(self%handle, x, int(size(xshape), c_int), c_loc(xs), y, ydtype, &
                          int(size(yshape), c_int), c_loc(ys), c_loc(buf)), status, "model%fit")
        call flush_all()
    end subroutine

    !> Trains on x(features..., samples) and float targets y(outputs..., samples) (or y(samples)).
    subroutine fit_f32(self, x, y, epochs, batch_size, validation_split, shuffle, verbose, seed, &
                       initial_epoch, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..), y(..)
        integer, intent(in), optional :: epochs, batch_size, verbose, seed, initial_epoch
        real, intent(in), optional :: validation_split
        logical, intent(in), optional :: shuffle
        integer, intent(out), optional :: status
        call fit_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_FLOAT32, epochs, batch_size, &
                     validation_split, shuffle, verbose, seed, initial_epoch, status)
    end subroutine

    !> Trains on x(features..., samples) and class ids y(samples) (sparse losses).
    subroutine fit_i32(self, x, y, epochs, batch_size, validation_split, shuffle, verbose, seed, &
                       initial_epoch, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        integer(c_int32_t), intent(in), contiguous, target :: y(..)
        integer, intent(in), optional :: epochs, batch_size, verbose, seed, initial_epoch
        real, intent(in), optional :: validation_split
        logical, intent(in), optional :: shuffle
        integer, intent(out), optional :: status
        call fit_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_INT32, epochs, batch_size, &
                     validation_split, shuffle, verbose, seed, initial_epoch, status)
    end subroutine

    subroutine fit_i64(self, x, y, epochs, batch_size, validation_split, shuffle, verbose, seed, &
                       initial_epoch, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        integer(c_int64_t), intent(in), contiguous, target :: y(..)
        integer, intent(in), optional :: epochs, batch_size, verbose, seed, initial_epoch
        real, intent(in), optional :: validation_split
        logical, intent(in), optional :: shuffle
        integer, intent(out), optional :: status
        call fit_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_INT64, epochs, batch_size, &
                     validation_split, shuffle, verbose, seed, initial_epoch, status)
    end subroutine

    subroutine evaluate_any(self, x, xshape, y, yshape, ydtype, results, batch_size, status)
        class(nnl_model), intent(inout) :: self
        type(c_ptr), intent(in) :: x, y
        integer, intent(in) :: xshape(:), yshape(:)
        integer(c_int), intent(in) :: ydtype
        real(c_double), intent(out), contiguous, target :: results(:)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        integer(c_int64_t), target :: xs(max(1, size(xshape))), ys(max(1, size(yshape)))
        integer(c_int) :: bs
        bs = 0
        if (present(batch_size)) bs = int(batch_size, c_int)
        call c_shape_of(xshape, xs)
        call c_shape_of(yshape, ys)
        results = 0
        call finish(c_evaluate(self%handle, x, int(size(xshape), c_int), c_loc(xs), y, ydtype, &
                               int(size(yshape), c_int), c_loc(ys), bs, c_loc(results), &
                               int(size(results), c_int)), status, "model%evaluate")
    end subroutine

    !> results(1) = loss, results(2:) = the metrics, as many as results holds.
    subroutine evaluate_f32(self, x, y, results, batch_size, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..), y(..)
        real(c_double), intent(out), contiguous, target :: results(:)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        call evaluate_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_FLOAT32, results, batch_size, status)
    end subroutine

    subroutine evaluate_i32(self, x, y, results, batch_size, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        integer(c_int32_t), intent(in), contiguous, target :: y(..)
        real(c_double), intent(out), contiguous, target :: results(:)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        call evaluate_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_INT32, results, batch_size, status)
    end subroutine

    subroutine evaluate_i64(self, x, y, results, batch_size, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        integer(c_int64_t), intent(in), contiguous, target :: y(..)
        real(c_double), intent(out), contiguous, target :: results(:)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        call evaluate_any(self, c_loc(x), shape(x), c_loc(y), shape(y), NNL_INT64, results, batch_size, status)
    end subroutine

    !> Inference: y(outputs..., samples) from x(features..., samples); no allocation, no copy.
    !> Since 0.5 the threads of an OpenMP loop may call predict and predict_classes on one
    !> model at once, while nothing changes the model (nnlite.h, "Concurrent predictions").
    subroutine model_predict(self, x, y, batch_size, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        real(c_float), intent(inout), contiguous, target :: y(..)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        integer(c_int64_t), target :: xs(max(1, rank(x)))
        integer(c_int) :: bs
        bs = 0
        if (present(batch_size)) bs = int(batch_size, c_int)
        call c_shape_of(shape(x), xs)
        call finish(c_predict(self%handle, c_loc(x), int(rank(x), c_int), c_loc(xs), bs, c_loc(y), &
                              int(size(y), c_int64_t)), status, "model%predict")
    end subroutine

    !> Inference on token ids (an Embedding first layer): x(steps, samples) as
    !> integer(c_int32_t), through nnl_predict_typed; no copy on the Fortran side.
    subroutine model_predict_ids(self, x, y, batch_size, status)
        class(nnl_model), intent(inout) :: self
        integer(c_int32_t), intent(in), contiguous, target :: x(..)
        real(c_float), intent(inout), contiguous, target :: y(..)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        integer(c_int64_t), target :: xs(max(1, rank(x)))
        integer(c_int) :: bs
        bs = 0
        if (present(batch_size)) bs = int(batch_size, c_int)
        call c_shape_of(shape(x), xs)
        call finish(c_predict_typed(self%handle, c_loc(x), NNL_INT32, int(rank(x), c_int), c_loc(xs), bs, &
                                    c_loc(y), int(size(y), c_int64_t)), status, "model%predict")
    end subroutine

    !> Class ids (0-based, as nnlite's) of each sample's prediction.
    subroutine model_predict_classes(self, x, classes, batch_size, status)
        class(nnl_model), intent(inout) :: self
        real(c_float), intent(in), contiguous, target :: x(..)
        integer(c_int32_t), intent(inout), contiguous, target :: classes(:)
        integer, intent(in), optional :: batch_size
        integer, intent(out), optional :: status
        integer(c_int64_t), target :: xs(max(1, rank(x)))
        integer(c_int) :: bs
        bs = 0
        if (present(batch_size)) bs = int(batch_size, c_int)
        call c_shape_of(shape(x), xs)
        call finish(c_predict_classes(self%handle, c_loc(x), int(rank(x), c_int), c_loc(xs), bs, &
                                      c_loc(classes), int(size(classes), c_int64_t)), status, "model%predict_classes")
    end subroutine

    !> Prints Keras' summary table on standard output.
    subroutine model_summary(self, status)
        class(nnl_model), intent(in) :: self
        integer, intent(out), optional :: status
        integer(c_int) :: rc
        call flush_all()
        rc = c_summary(self%handle, c_null_ptr)
        call flush_all()
        call finish(rc, status, "model%summary")
    end subroutine

    !> All weights, trainable or not: Keras' count_params() ("Total params").
    integer(c_int64_t) function model_param_count(self)
        class(nnl_model), intent(in) :: self
        model_param_count = c_param_count(self%handle)
    end function

    !> The summary's "Trainable params": what the optimizer updates.
    integer(c_int64_t) function model_trainable_param_count(self)
        class(nnl_model), intent(in) :: self
        model_trainable_param_count = c_trainable_param_count(self%handle)
    end function

    !> The summary's "Non-trainable params" (BatchNormalization's moving statistics).
    integer(c_int64_t) function model_non_trainable_param_count(self)
        class(nnl_model), intent(in) :: self
        model_non_trainable_param_count = c_non_trainable_param_count(self%handle)
    end function

    ! ---- weights ----
    ! Every weight tensor, trainable or not, in Keras get_weights() order,
    ! numbered 1 .. weight_count() here (nnlite.h's index i - 1). A tensor of
    ! C shape (in, out) is the Fortran array w(out, in): shapes are reversed,
    ! as for x.

    !> Number of weight tensors (BatchNormalization's moving statistics included).
    integer function model_weight_count(self)
        class(nnl_model), intent(in) :: self
        model_weight_count = int(c_weight_count(self%handle))
    end function

    !> Fortran shape of weight i: a Dense kernel (in, out) gives [out, in].
    function model_weight_shape(self, i) result(fs)
        class(nnl_model), intent(in) :: self
        integer, intent(in) :: i
        integer(c_int64_t), allocatable :: fs(:)
        integer(c_int64_t), target :: cs(8)
        integer(c_int) :: r
        integer :: k
        r = 0
        call finish(c_weight_info(self%handle, int(i - 1, c_int), c_null_ptr, 0_c_int, r, c_loc(cs)), &
                    what="weight_shape")
        allocate (fs(r))
        do k = 1, int(r)
            fs(k) = cs(int(r) + 1 - k)
        end do
    end function

    !> Name of weight i, e.g. "dense_1/kernel".
    function model_weight_name(self, i) result(name)
        class(nnl_model), intent(in) :: self
        integer, intent(in) :: i
        character(len=:), allocatable :: name
        character(kind=c_char), target :: buf(512)
        integer(c_int) :: r
        integer :: k, n
        buf = c_null_char
        call finish(c_weight_info(self%handle, int(i - 1, c_int), c_loc(buf), 512_c_int, r, c_null_ptr), &
                    what="weight_name")
        n = 0
        do while (n < 512)
            if (buf(n + 1) == c_null_char) exit
            n = n + 1
        end do
        allocate (character(len=n) :: name)
        do k = 1, n
            name(k:k) = buf(k)
        end do
    end function

    !> .false. for state the optimizer leaves alone (moving statistics).
    logical function model_weight_trainable(self, i)
        class(nnl_model), intent(in) :: self
        integer, intent(in) :: i
        integer(c_int) :: t
        t = 0
        call finish(c_weight_trainable(self%handle, int(i - 1, c_int), t), what="weight_trainable")
        model_weight_trainable = t /= 0
    end function

    !> Copies weight i into w (any rank; size(w) must equal the tensor's size).
    subroutine model_get_weight(self, i, w, status)
        class(nnl_model), intent(in) :: self
        integer, intent(in) :: i
        real(c_float), intent(inout), contiguous, target :: w(..)
        integer, intent(out), optional :: status
        call finish(c_get_weight(self%handle, int(i - 1, c_int), c_loc(w), int(size(w), c_int64_t)), status, &
                    "get_weight")
    end subroutine

    !> Sets weight i from w (size(w) must equal the tensor's size; finite values).
    subroutine model_set_weight(self, i, w, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(in) :: i
        real(c_float), intent(in), contiguous, target :: w(..)
        integer, intent(out), optional :: status
        call finish(c_set_weight(self%handle, int(i - 1, c_int), c_loc(w), int(size(w), c_int64_t)), status, &
                    "set_weight")
    end subroutine

    !> Per-epoch values of a history key ("loss", "val_accuracy", ...); empty when unknown.
    function model_history(self, key) result(v)
        class(nnl_model), intent(in) :: self
        character(len=*), intent(in) :: key
        real(c_double), allocatable, target :: v(:)
        integer(c_int) :: n
        n = c_history_get(self%handle, cstr(key), c_null_ptr, 0_c_int)
        allocate (v(max(0, n)))
        if (n > 0) n = c_history_get(self%handle, cstr(key), c_loc(v), n)
    end function

    real(c_double) function model_learning_rate(self)
        class(nnl_model), intent(in) :: self
        model_learning_rate = c_get_lr(self%handle)
    end function

    subroutine model_set_learning_rate(self, lr, status)
        class(nnl_model), intent(inout) :: self
        real(c_double), intent(in) :: lr
        integer, intent(out), optional :: status
        call finish(c_set_lr(self%handle, lr), status, "model%set_learning_rate")
    end subroutine

    ! ---- files ----

    !> Structure, weights, compile state and optimizer state (resumable). A path ending in
    !> .keras or .h5 writes Keras' own file (architecture, weights, compile configuration and
    !> optimizer state as Keras' optimizer variables; needs HDF5).
    subroutine model_save(self, path, status)
        class(nnl_model), intent(in) :: self
        character(len=*), intent(in) :: path
        integer, intent(out), optional :: status
        call finish(c_save_model(self%handle, cstr(path)), status, "model%save")
    end subroutine

    !> Replaces this model by the one saved in path: nnlite's own file, or Keras' .keras or
    !> .h5 file (told by content; compiled with its optimizer state when nnlite can follow
    !> the file, else uncompiled; needs HDF5).
    subroutine model_load(self, path, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: path
        integer, intent(out), optional :: status
        type(c_ptr) :: h
        integer :: st
        call ensure_init(st)
        if (st /= NNL_OK) then
            if (present(status)) status = st
            return
        end if
        h = c_null_ptr
        call finish(c_load_model(cstr(path), h), status, "model%load")
        if (c_associated(h)) then
            call self%free()
            self%handle = h
        end if
    end subroutine

    logical function is_npz(path)
        character(len=*), intent(in) :: path
        integer :: n
        n = len_trim(path)
        is_npz = .false.
        if (n >= 4) is_npz = path(n - 3:n) == ".npz"
    end function

    !> Weights only; a path ending in .npz writes a numpy archive.
    subroutine model_save_weights(self, path, status)
        class(nnl_model), intent(in) :: self
        character(len=*), intent(in) :: path
        integer, intent(out), optional :: status
        if (is_npz(path)) then
            call finish(c_save_weights_npz(self%handle, cstr(path)), status, "model%save_weights")
        else
            call finish(c_save_weights(self%handle, cstr(path)), status, "model%save_weights")
        end if
    end subroutine

    subroutine model_load_weights(self, path, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: path
        integer, intent(out), optional :: status
        if (is_npz(path)) then
            call finish(c_load_weights_npz(self%handle, cstr(path)), status, "model%load_weights")
        else
            call finish(c_load_weights(self%handle, cstr(path)), status, "model%load_weights")
        end if
    end subroutine

    !> The structure as JSON text.
    function model_to_json(self) result(json)
        class(nnl_model), intent(in) :: self
        character(len=:), allocatable :: json
        character(kind=c_char), allocatable, target :: buf(:)
        integer(c_int64_t) :: n
        integer :: i
        n = c_to_json(self%handle, c_null_ptr, 0_c_int64_t)
        if (n < 0) then
            call finish(int(NNL_ERR_ARGUMENT, c_int), what="model%to_json")
            json = ""
            return
        end if
        allocate (buf(n + 1))
        n = c_to_json(self%handle, c_loc(buf), n + 1)
        allocate (character(len=n) :: json)
        do i = 1, int(n)
            json(i:i) = buf(i)
        end do
    end function

    !> Replaces this model by a new, uncompiled one built from JSON text.
    subroutine model_from_json(self, json, status)
        class(nnl_model), intent(inout) :: self
        character(len=*), intent(in) :: json
        integer, intent(out), optional :: status
        type(c_ptr) :: h
        integer :: st
        call ensure_init(st)
        if (st /= NNL_OK) then
            if (present(status)) status = st
            return
        end if
        h = c_null_ptr
        call finish(c_from_json(cstr(json), h), status, "model%from_json")
        if (c_associated(h)) then
            call self%free()
            self%handle = h
        end if
    end subroutine

    ! ---- data-parallel training over MPI (nnlite.h, "since 0.4") ----
    ! This module does not use the mpi module (it builds without MPI): a
    ! communicator crosses as its Fortran handle, a default integer (MPI_Fint),
    ! which the library turns into its C MPI_Comm (MPI_Comm_f2c). With the mpi
    ! module pass the communicator itself (MPI_COMM_WORLD, or one from
    ! MPI_Comm_split); with mpi_f08 pass its handle: comm%MPI_VAL. The library
    ! and the program must use the same MPI. Initialise MPI with at least
    ! MPI_THREAD_FUNNELED (MPI_Init_thread), or call nnl_mpi_init. A library
    ! built without MPI answers NNL_ERR_UNSUPPORTED (nnl_has_feature("mpi")).

    !> Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless it is
    !> initialised already; a program that calls MPI_Init_thread need not.
    subroutine nnl_mpi_init(status)
        integer, intent(out), optional :: status
        call finish(c_mpi_init(c_null_ptr, c_null_ptr), status, "nnl_mpi_init")
    end subroutine

    !> Finalises MPI if nnl_mpi_init (or model%distribute without comm)
    !> started it; never an MPI the program started. Free the distributed
    !> models first.
    subroutine nnl_mpi_finalize(status)
        integer, intent(out), optional :: status
        call finish(c_mpi_finalize(), status, "nnl_mpi_finalize")
    end subroutine

    !> Makes this model a replica of a data-parallel run over the communicator
    !> comm (an integer handle of the mpi module, e.g. MPI_COMM_WORLD; with
    !> mpi_f08, comm%MPI_VAL). Collective: every rank of comm calls it; fit and
    !> evaluate are then collective too (same order, same options on every
    !> rank). comm absent: MPI_COMM_WORLD, initialising MPI (nnl_mpi_init) when
    !> no one has; MPI_COMM_NULL makes the model local again. flags:
    !> NNL_DATA_SHARDED (default: every rank passes the same data and trains
    !> on its shard) or NNL_DATA_LOCAL (each rank passes its own samples),
    !> plus NNL_GLOBAL_BATCH with NNL_DATA_SHARDED (batch_size is the step's
    !> total instead of per rank) and NNL_SYNC_BATCHNORM (BatchNormalization's
    !> batch statistics over all ranks), combined with ior.
    subroutine model_distribute(self, comm, flags, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(in), optional :: comm, flags
        integer, intent(out), optional :: status
        integer(c_int) :: f
        f = NNL_DATA_SHARDED
        if (present(flags)) f = int(flags, c_int)
        if (present(comm)) then
            call finish(c_distribute_f(self%handle, int(comm, c_int), f), status, "model%distribute")
        else
            call finish(c_distribute(self%handle, c_null_ptr, f), status, "model%distribute")
        end if
    end subroutine

    !> This process' rank (0-based) and the number of ranks of the model's
    !> communicator: 0 and 1 for a model that is not distributed.
    subroutine model_mpi_rank(self, rank, size)
        class(nnl_model), intent(in) :: self
        integer, intent(out), optional :: rank, size
        integer(c_int) :: r, n, rc
        r = 0
        n = 1
        rc = c_mpi_rank(self%handle, r, n)
        if (present(rank)) rank = int(r)
        if (present(size)) size = int(n)
    end subroutine

    !> The linear scaling rule: the learning rate times the number of ranks
    !> (a global batch that many times larger). After compile, on every rank.
    subroutine model_scale_learning_rate(self, status)
        class(nnl_model), intent(inout) :: self
        integer, intent(out), optional :: status
        call finish(c_scale_lr(self%handle), status, "model%scale_learning_rate")
    end subroutine

    ! ---- data ----

    !> MNIST-style data set (folder of idx files, plain or .gz, or a Keras .npz):
    !> x_train(28, 28, N) images 0..255 (Fortran order of C's (N, 28, 28)), y_train(N) class ids.
    subroutine nnl_load_mnist(path, x_train, y_train, x_test, y_test, status)
        character(len=*), intent(in) :: path
        real(c_float), allocatable, intent(out) :: x_train(:, :, :), x_test(:, :, :)
        integer(c_int64_t), allocatable, intent(out) :: y_train(:), y_test(:)
        integer, intent(out), optional :: status
        type(c_ptr) :: a(4)
        integer(c_int) :: rc
        integer :: i
        a = c_null_ptr
        rc = c_load_mnist(cstr(path), a(1), a(2), a(3), a(4))
        if (rc == NNL_OK) then
            call images(a(1), x_train)
            call labels(a(2), y_train)
            call images(a(3), x_test)
            call labels(a(4), y_test)
        end if
        do i = 1, 4
            call c_array_free(a(i))
        end do
        call finish(rc, status, "nnl_load_mnist")
    contains
        subroutine images(arr, x)
            type(c_ptr), intent(in) :: arr
            real(c_float), allocatable, intent(out) :: x(:, :, :)
            real(c_float), pointer :: p(:, :, :)
            call c_f_pointer(c_array_data(arr), p, [c_array_dim(arr, 2_c_int), c_array_dim(arr, 1_c_int), &
                                                    c_array_dim(arr, 0_c_int)])
            x = p
        end subroutine
        subroutine labels(arr, y)
            type(c_ptr), intent(in) :: arr
            integer(c_int64_t), allocatable, intent(out) :: y(:)
            integer(c_int64_t), pointer :: p(:)
            call c_f_pointer(c_array_data(arr), p, [c_array_dim(arr, 0_c_int)])
            y = p
        end subroutine
    end subroutine

    !> Sliding windows over a series for one-step forecasting (nnl_sliding_windows):
    !> series(features, n) (Fortran order of C's (n, features)) gives
    !> x(features, window, n - window) with x(:, :, t) = series(:, t : t + window - 1)
    !> and y(features, n - window) with y(:, t) = series(:, t + window): the
    !> layouts model%fit takes for an LSTM on (window, features) inputs.
    !> window >= 1 and n > window, else NNL_ERR_ARGUMENT.
    subroutine nnl_sliding_windows(series, window, x, y, status)
        real(c_float), intent(in), contiguous, target :: series(:, :)
        integer, intent(in) :: window
        real(c_float), allocatable, intent(out) :: x(:, :, :), y(:, :)
        integer, intent(out), optional :: status
        type(c_ptr) :: a(2)
        real(c_float), pointer :: px(:, :, :), py(:, :)
        integer(c_int) :: rc
        a = c_null_ptr
        rc = c_sliding_windows(c_loc(series), int(size(series, 2), c_int64_t), int(size(series, 1), c_int64_t), &
                               int(window, c_int64_t), a(1), a(2))
        if (rc == NNL_OK) then
            call c_f_pointer(c_array_data(a(1)), px, [c_array_dim(a(1), 2_c_int), c_array_dim(a(1), 1_c_int), &
                                                      c_array_dim(a(1), 0_c_int)])
            call c_f_pointer(c_array_data(a(2)), py, [c_array_dim(a(2), 1_c_int), c_array_dim(a(2), 0_c_int)])
            x = px
            y = py
        end if
        if (c_associated(a(1))) call c_array_free(a(1))
        if (c_associated(a(2))) call c_array_free(a(2))
        call finish(rc, status, "nnl_sliding_windows")
    end subroutine

    ! ---- images (since 0.7; need a library built with stb: nnl_has_feature("images")) ----

    !> One image file (PNG, JPEG, BMP, GIF, TGA, PNM; nnl_load_image) as
    !> x(channels, width, height): the Fortran order of C's (height, width,
    !> channels), so x(:, i, j) is the pixel of column i, row j (row 1 at the
    !> top). channels: 0 as stored (default), 1 grayscale, 3 RGB, 4 RGBA;
    !> height and width (both or neither) resize; values 0..255 times scale
    !> (default 1; 1.0/255 for [0, 1]).
    subroutine nnl_load_image(path, x, status, channels, height, width, scale)
        character(len=*), intent(in) :: path
        real(c_float), allocatable, intent(out) :: x(:, :, :)
        integer, intent(out), optional :: status
        integer, intent(in), optional :: channels, height, width
        real, intent(in), optional :: scale
        type(c_ptr) :: a
        real(c_float), pointer :: p(:, :, :)
        integer(c_int) :: rc
        a = c_null_ptr
        rc = c_load_image(cstr(path), int(opt_int(channels, 0), c_int), int(opt_int(height, 0), c_int), &
                          int(opt_int(width, 0), c_int), real(opt_real(scale, 1.0), c_float), a)
        if (rc == NNL_OK) then
            call c_f_pointer(c_array_data(a), p, [c_array_dim(a, 2_c_int), c_array_dim(a, 1_c_int), &
                                                  c_array_dim(a, 0_c_int)])
            x = p
        end if
        if (c_associated(a)) call c_array_free(a)
        call finish(rc, status, "nnl_load_image")
    end subroutine

    !> A labelled data set from a folder of class folders, as Keras'
    !> image_dataset_from_directory (nnl_image_dataset_from_directory):
    !> x(channels, width, height, n), y(n) class ids 0.. (int32), class_names(k)
    !> the sorted subfolder names (blank-padded to the longest). Options as in
    !> nnlite.h: height, width (default: the files' size), channels (default 3,
    !> RGB), scale (default 1), shuffle (default .true.), seed (integer(c_int64_t)
    !> in 0..2^32-1, default 0: the same seed splits the files as Keras does),
    !> validation_split with subset "training" or "validation", skip_bad
    !> (default .false.: an unreadable file fails the call).
    subroutine nnl_image_dataset_from_directory(directory, x, y, class_names, status, height, width, channels, &
                                                scale, shuffle, seed, validation_split, subset, skip_bad)
        character(len=*), intent(in) :: directory
        real(c_float), allocatable, intent(out) :: x(:, :, :, :)
        integer(c_int32_t), allocatable, intent(out) :: y(:)
        character(len=:), allocatable, intent(out) :: class_names(:)
        integer, intent(out), optional :: status
        integer, intent(in), optional :: height, width, channels
        real, intent(in), optional :: scale
        logical, intent(in), optional :: shuffle, skip_bad
        integer(c_int64_t), intent(in), optional :: seed
        real(c_double), intent(in), optional :: validation_split
        character(len=*), intent(in), optional :: subset
        type(c_ptr) :: a(3)
        real(c_float), pointer :: px(:, :, :, :)
        integer(c_int32_t), pointer :: py(:)
        character(kind=c_char, len=:), allocatable, target :: csub
        type(c_ptr) :: psub
        integer(c_int) :: rc, shuf, skip
        integer(c_int64_t) :: k, i
        integer :: longest
        a = c_null_ptr
        psub = c_null_ptr
        if (present(subset)) then
            csub = cstr(subset)
            psub = c_loc(csub)
        end if
        shuf = 1
        if (present(shuffle)) then
            if (.not. shuffle) shuf = 0
        end if
        skip = 0
        if (present(skip_bad)) then
            if (skip_bad) skip = 1
        end if
        k = 0
        if (present(seed)) k = seed
        rc = c_image_dataset(cstr(directory), int(opt_int(height, 0), c_int), int(opt_int(width, 0), c_int), &
                             int(opt_int(channels, 3), c_int), real(opt_real(scale, 1.0), c_float), shuf, k, &
                             opt_double(validation_split), psub, skip, a(1), a(2), a(3))
        if (rc == NNL_OK) then
            call c_f_pointer(c_array_data(a(1)), px, [c_array_dim(a(1), 3_c_int), c_array_dim(a(1), 2_c_int), &
                                                      c_array_dim(a(1), 1_c_int), c_array_dim(a(1), 0_c_int)])
            call c_f_pointer(c_array_data(a(2)), py, [c_array_dim(a(2), 0_c_int)])
            x = px
            y = py
            longest = 1
            do i = 0, c_vocab_size(a(3)) - 1
                longest = max(longest, len(fstr(c_vocab_word(a(3), i))))
            end do
            allocate (character(len=longest) :: class_names(c_vocab_size(a(3))))
            do i = 0, c_vocab_size(a(3)) - 1
                class_names(i + 1) = fstr(c_vocab_word(a(3), i))
            end do
        end if
        if (c_associated(a(1))) call c_array_free(a(1))
        if (c_associated(a(2))) call c_array_free(a(2))
        if (c_associated(a(3))) call c_vocab_free(a(3))
        call finish(rc, status, "nnl_image_dataset_from_directory")
    end subroutine

    !> Writes x(channels, width, height) (channels 1..4; nnl_save_image) as the
    !> image format the path's extension names (.png, .jpg, .bmp, .tga); each
    !> value times scale (default 1; 255 for [0, 1] data) is rounded and
    !> clipped to 0..255.
    subroutine nnl_save_image(path, x, status, scale)
        character(len=*), intent(in) :: path
        real(c_float), intent(in), contiguous, target :: x(:, :, :)
        integer, intent(out), optional :: status
        real, intent(in), optional :: scale
        call finish(c_save_image(cstr(path), c_loc(x), int(size(x, 3), c_int), int(size(x, 2), c_int), &
                                 int(size(x, 1), c_int), real(opt_real(scale, 1.0), c_float)), status, &
                    "nnl_save_image")
    end subroutine

    integer function opt_int(v, default)
        integer, intent(in), optional :: v
        integer, intent(in) :: default
        opt_int = default
        if (present(v)) opt_int = v
    end function

    real function opt_real(v, default)
        real, intent(in), optional :: v
        real, intent(in) :: default
        opt_real = default
        if (present(v)) opt_real = v
    end function

    real(c_double) function opt_double(v)
        real(c_double), intent(in), optional :: v
        opt_double = 0
        if (present(v)) opt_double = v
    end function

end module nnlite
