! Tests of the Fortran module (bindings/fortran/nnlite.f90), run by `make test`.
! Exits nonzero when a check fails.
program test_nnlite
    use nnlite
    use, intrinsic :: iso_c_binding
    implicit none
    integer :: failures = 0, st, i, n, right
    type(nnl_model) :: m, m2
    real(c_float), allocatable :: x(:, :), p(:, :), p2(:, :), w1(:, :), ref(:, :), xt(:, :)
    integer(c_int32_t), allocatable :: y(:), cls(:)
    integer(c_int64_t), allocatable :: yt(:)
    real(c_double) :: res(2)
    real(c_double), allocatable :: loss(:)
    character(len=:), allocatable :: json
    character(len=256) :: dir
    character(len=4096) :: self_path, arg, errfile
    character(len=:), allocatable :: text
    integer :: es, cs, u, ios
    character(len=1024) :: line

    ! child mode (below): a failure without status stops the program
    call get_command_argument(1, arg)
    if (trim(arg) == "--fit-uncompiled") then
        allocate (x(3, 4), y(4))
        x = 0
        y = 0
        call m%create(seed=1)
        call m%add("Dense(2, input_shape=(3,))")
        call m%fit(x, y, verbose=0)
        stop "not reached: fit before compile did not stop"
    end if

    call check(nnl_library_version() == "0.8.3", "library version")
    call check(index(nnl_build_info(), "nnlite 0.8.3;") == 1, "build info: " // nnl_build_info())
    call check(.not. nnl_has_feature("mpi"), "no MPI in this version")
    call check(nnl_has_feature("threads") .eqv. (index(nnl_build_info(), "threads: yes") > 0), "threads as build info says")
    call check(.not. nnl_has_feature("no such feature"), "unknown feature: .false.")
    call check(index(nnl_error_message(), "known: stb") > 0, "unknown feature: the message lists the known ones")
    call nnl_initialize(st)
    call check(st == NNL_OK, "nnl_init accepts this module's version")
    call nnl_initialize(st, header_version=(NNL_VERSION_MAJOR + 1) * 10000)
    call check(st == NNL_ERR_UNSUPPORTED, "nnl_init refuses another major version")
    call check(index(nnl_error_message(), "major") > 0, "the refusal says why: " // nnl_error_message())
    call check(NNL_ERR_INTERNAL == 9 .and. NNL_ERR_DISTRIBUTED == 10 .and. NNL_ERR_DEVICE == 11, &
               "status codes as nnlite.h's (NNL_ERR_DEVICE since 0.8)")

    ! quadrant classes: x(2, n) column-major is C's (n, 2)
    n = 800
    call quadrants(n, 1, x, y)
    call m%create(seed=3)
    call m%add("Dense(16, activation='relu', input_shape=(2,))")
    call m%add("Dense(4, activation='softmax')")
    call check(m%param_count() == 116, "param count")
    call m%compile("Adam(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy")
    call m%fit(x, y, epochs=10, batch_size=32, validation_split=0.2, verbose=0)
    loss = m%history("loss")
    call check(size(loss) == 10, "history has 10 epochs")
    call check(loss(10) < loss(1), "loss went down")
    call check(size(m%history("val_accuracy")) == 10, "validation ran")
    call check(size(m%history("no_such_key")) == 0, "unknown key: empty")

    call quadrants(300, 2, xt, y)
    allocate (yt(size(y)))
    yt = int(y, c_int64_t)
    call m%evaluate(xt, yt, res)
    call check(res(2) > 0.9d0, "test accuracy > 0.9")
    allocate (p(4, 300), cls(300))
    call m%predict(xt, p)
    call m%predict_classes(xt, cls)
    right = 0
    do i = 1, 300
        if (maxloc(p(:, i), 1) - 1 == cls(i)) right = right + 1
    end do
    call check(right == 300, "predict_classes = argmax of predict")
    right = count(int(cls, c_int64_t) == yt)
    call check(abs(right / 300d0 - res(2)) < 1d-6, "evaluate's accuracy = predictions'")
    call check(all(abs(sum(p, 1) - 1) < 1e-5), "softmax columns sum to 1")

    ! layout: a one-layer linear model is p = W^T x + b, with W (in=2, out=3) as nnlite's (in, out)
    call m2%create(seed=5)
    call m2%add("Dense(3, input_shape=(2,), bias_initializer='ones')")
    allocate (w1(3, 2), ref(3, 4), p2(3, 4))
    call weights_of(m2, w1)
    call m2%predict(xt(:, 1:4), p2)
    ref = matmul(w1, xt(:, 1:4)) + 1
    call check(all(abs(p2 - ref) < 1e-5), "predict(x(features, samples)) = W x + b")
    ! a non-contiguous section is copied in by the compiler and gives the same
    call m2%predict(xt(:, 1:8:2), p2)
    ref = matmul(w1, xt(:, 1:8:2)) + 1
    call check(all(abs(p2 - ref) < 1e-5), "strided section")

    ! errors: with status they come back, with the message
    call m2%predict(xt, p2, status=st) ! 300 samples into 3 x 4
    call check(st == NNL_ERR_SHAPE, "predict into too small an array: NNL_ERR_SHAPE")
    call m2%add("Dense(2, activation='nosuch')", status=st)
    call check(st == NNL_ERR_ARGUMENT .and. index(nnl_error_message(), "nosuch") > 0, "bad activation")
    call m2%fit(xt, yt, status=st)
    call check(st == NNL_ERR_STATE, "fit before compile: NNL_ERR_STATE")

    ! error stop prints one prefix, the Fortran call's, and Fortran's names:
    ! run this program again as a child that calls fit before compile
    call get_command_argument(0, self_path)
    call get_environment_variable("TMPDIR", errfile)
    if (len_trim(errfile) == 0) errfile = "/tmp"
    errfile = trim(errfile) // "/nnlite_fortran_error_stop.txt"
    call execute_command_line("GFORTRAN_ERROR_BACKTRACE=0 " // trim(self_path) // " --fit-uncompiled 2> " // &
                              trim(errfile), exitstat=es, cmdstat=cs)
    call check(cs == 0 .and. es /= 0, "fit before compile without status: error stop")
    text = ""
    open (newunit=u, file=trim(errfile), status="old", action="read", iostat=ios)
    do while (ios == 0)
        read (u, '(a)', iostat=ios) line
        if (ios == 0) text = text // trim(line) // new_line("a")
    end do
    if (ios /= 0 .and. len(text) == 0) text = "(no output)"
    close (u, status="delete", iostat=ios)
    call check(index(text, "nnlite: model%fit: the model is not compiled: call model%compile first") == 1, &
               "error stop text: " // text)
    call check(index(text, "fit: fit") == 0 .and. index(text, "nnl_") == 0, "no doubled prefix, no C names: " // text)
    ! the message composer itself: the C prefix goes, whatever function it names
    call m2%add("Dense(2, activation='nosuch')", status=st)
    call check(index(nnl_error_message(), "nnl_add: ") == 1, "nnl_error_message keeps nnlite's C message")

    ! device selection: without a GPU (or CUDA build) a clear error, the model stays on the CPU
    call m2%set_device("cpu", status=st)
    call check(st == NNL_OK, "set_device cpu")
    call m2%set_device("tpu", status=st)
    call check(st == NNL_ERR_ARGUMENT, "set_device tpu: NNL_ERR_ARGUMENT")
    call m2%set_device("gpu:", status=st)
    call check(st == NNL_ERR_ARGUMENT, "set_device gpu: (malformed): NNL_ERR_ARGUMENT")
    if (nnl_cuda_device_count() == 0) then
        call m2%set_device("cuda", status=st)
        call check(st == NNL_ERR_UNSUPPORTED .and. len_trim(nnl_error_message()) > 0, &
                   "set_device cuda without a GPU: NNL_ERR_UNSUPPORTED")
        call m2%set_device("gpu", status=st)
        call check(st == NNL_ERR_UNSUPPORTED, "set_device gpu (= cuda) without a GPU: NNL_ERR_UNSUPPORTED")
    end if

    ! mixed precision (since 0.6): Keras' policy names; without AVX512-BF16 a clear error, float32 kept
    call check(m2%precision() == "float32", "precision: float32 by default")
    call m2%set_precision("bfloat16", status=st)
    call check(st == NNL_ERR_ARGUMENT .and. index(nnl_error_message(), "mixed_bfloat16") > 0, &
               "set_precision bfloat16: NNL_ERR_ARGUMENT naming the accepted names")
    call m2%set_precision("mixed_bfloat16", status=st)
    if (nnl_has_feature("bf16")) then
        call check(st == NNL_OK .and. m2%precision() == "mixed_bfloat16", "set_precision mixed_bfloat16")
    else if (st /= NNL_OK) then
        call check(st == NNL_ERR_UNSUPPORTED .and. index(nnl_error_message(), "AVX512-BF16") > 0 .and. &
                   m2%precision() == "float32", "set_precision mixed_bfloat16 without AVX512-BF16: NNL_ERR_UNSUPPORTED")
    end if
    call m2%set_precision("float32", status=st)
    call check(st == NNL_OK .and. m2%precision() == "float32", "set_precision float32")

    ! weights with BatchNormalization: every tensor, trainable flags, Keras' counts (issue 11)
    call weight_list_with_batch_normalization()

    ! a stateful LSTM: states carry from call to call until model%reset_states (issue 12)
    call stateful_lstm()

    ! files (nnl_save_model & co)
    call get_environment_variable("TMPDIR", dir)
    if (len_trim(dir) == 0) dir = "/tmp"
    dir = trim(dir) // "/nnlite_fortran_test"
    call m%save(trim(dir) // ".nnl")
    call m2%load(trim(dir) // ".nnl")
    if (allocated(xt)) deallocate (xt)
    allocate (xt(2, 300))
    deallocate (p2)
    allocate (p2(4, 300))
    call quadrants(300, 2, xt, y)
    call m2%predict(xt, p2)
    call check(all(p2 == p), "load(save(m)) predicts the same")
    json = m%to_json()
    call check(index(json, "Dense") > 0, "to_json names the layers")
    call m%save_weights(trim(dir) // ".npz")
    call m2%from_json(json)
    call m2%load_weights(trim(dir) // ".npz")
    call m2%predict(xt, p2)
    call check(all(p2 == p), "from_json + load_weights(.npz) predicts the same")
    call m2%load(trim(dir) // "_missing.nnl", status=st)
    call check(st == NNL_ERR_IO, "load of a missing file: NNL_ERR_IO")
    call delete(trim(dir) // ".nnl")
    call delete(trim(dir) // ".npz")

    call m%free()
    call m2%free()
    call check(.not. m%is_valid(), "free")
    call token_ids()
    call lstm_forecaster()
    if (.not. nnl_has_feature("mpi")) call mpi_not_built_in()
    call image_files()
    call keras_files()
    if (failures > 0) then
        print '(a, i0, a)', "fortran tests: ", failures, " FAILED"
        error stop 1
    end if
    print '(a)', "fortran tests: all passed"

contains

    subroutine check(ok, what)
        logical, intent(in) :: ok
        character(len=*), intent(in) :: what
        if (.not. ok) then
            failures = failures + 1
            print '(a)', "FAILED: " // what
        end if
    end subroutine

    subroutine quadrants(n, seed, x, y)
        integer, intent(in) :: n, seed
        real(c_float), allocatable, intent(out) :: x(:, :)
        integer(c_int32_t), allocatable, intent(out) :: y(:)
        integer :: i
        integer(c_int64_t) :: s
        allocate (x(2, n), y(n))
        s = seed * 7919_c_int64_t + 1
        do i = 1, n
            s = modulo(s * 48271_c_int64_t, 2147483647_c_int64_t)
            x(1, i) = real(s, c_float) / 2147483647.0 * 2 - 1
            s = modulo(s * 48271_c_int64_t, 2147483647_c_int64_t)
            x(2, i) = real(s, c_float) / 2147483647.0 * 2 - 1
            y(i) = merge(2, 0, x(1, i) > 0) + merge(1, 0, x(2, i) > 0)
        end do
    end subroutine

    ! W(out, in) from nnlite's kernel (in, out): the C call fills the transposed Fortran array.
    subroutine weights_of(model, w)
        type(nnl_model), intent(in) :: model
        real(c_float), intent(out), target, contiguous :: w(:, :)
        interface
            function c_get_weight(m, i, out, count) bind(C, name="nnl_get_weight")
                import :: c_ptr, c_int, c_int64_t
                type(c_ptr), value :: m, out
                integer(c_int), value :: i
                integer(c_int64_t), value :: count
                integer(c_int) :: c_get_weight
            end function
        end interface
        call check(c_get_weight(model%handle, 0_c_int, c_loc(w), int(size(w), c_int64_t)) == NNL_OK, "get_weight")
    end subroutine

    subroutine stateful_lstm()
        type(nnl_model) :: s
        real(c_float) :: xs(2, 4, 3), first(3, 3), again(3, 3), reset(3, 3)
        integer :: k
        xs = reshape([(0.05 * mod(k, 9) - 0.2, k = 1, 24)], [2, 4, 3])
        call s%create(seed=3)
        call s%add("LSTM(3, stateful=True, input_shape=(4, 2))")
        call check(s%param_count() == 4 * (2 * 3 + 3 * 3 + 3), "LSTM parameter count")
        call s%predict(xs, first, batch_size=3)
        call s%predict(xs, again, batch_size=3)
        call check(any(again /= first), "stateful: the second call goes on from the first's states")
        call s%reset_states()
        call s%predict(xs, reset, batch_size=3)
        call check(all(reset == first), "model%reset_states: back to the first call's start")
        call s%predict(xs, again, batch_size=2, status=st)
        call check(st == NNL_ERR_SHAPE, "stateful: a partial final batch is refused")
        call s%free()
    end subroutine

    subroutine weight_list_with_batch_normalization()
        type(nnl_model) :: a, b
        real(c_float) :: xb(3, 4), pa(2, 4), pb(2, 4)
        real(c_float), allocatable :: w(:), k(:, :)
        integer(c_int64_t), allocatable :: s(:)
        logical :: flags(8)
        integer :: i, st
        call a%create(seed=1)
        call a%add("Dense(4, activation='relu', input_shape=(3,))")
        call a%add("BatchNormalization()")
        call a%add("Dense(2)")
        call b%create(seed=2)
        call b%add("Dense(4, activation='relu', input_shape=(3,))")
        call b%add("BatchNormalization()")
        call b%add("Dense(2)")
        call check(a%weight_count() == 8, "8 weight tensors with BatchNormalization")
        call check(a%param_count() == 42, "param_count is the total (42)")
        call check(a%trainable_param_count() == 34, "34 trainable")
        call check(a%non_trainable_param_count() == 8, "8 non-trainable")
        do i = 1, 8
            flags(i) = a%weight_trainable(i)
        end do
        call check(all(flags .eqv. [.true., .true., .true., .true., .false., .false., .true., .true.]), &
                   "trainable flags: moving statistics are not")
        call check(a%weight_name(5) == "batch_normalization/moving_mean", "weight_name(5)")
        call check(a%weight_name(8) == "dense_1/bias", "weight_name(8)")
        s = a%weight_shape(7)
        call check(size(s) == 2 .and. s(1) == 2 .and. s(2) == 4, "weight_shape(7): kernel (4, 2) is k(2, 4)")
        ! the last Dense's kernel: k(out, in); zero it and set the bias: the output is the bias
        allocate (k(2, 4))
        k = 0
        call a%set_weight(7, k)
        call a%set_weight(8, [1.0_c_float, 2.0_c_float])
        call a%set_weight(6, [2.0_c_float, 1.0_c_float, 0.5_c_float, 3.0_c_float]) ! moving variance
        do i = 1, 4
            xb(:, i) = [real(i, c_float), -0.5_c_float * i, 1.0_c_float]
        end do
        call a%predict(xb, pa)
        call check(all(pa(1, :) == 1) .and. all(pa(2, :) == 2), "weights 7 and 8 are the last Dense")
        k(1, 1) = 0.5
        call a%set_weight(7, k)
        ! every tensor into the other model: the same predictions
        do i = 1, a%weight_count()
            s = a%weight_shape(i)
            allocate (w(product(s)))
            call a%get_weight(i, w)
            call b%set_weight(i, w)
            deallocate (w)
        end do
        call a%predict(xb, pa)
        call b%predict(xb, pb)
        call check(all(pa == pb), "get_weight/set_weight of all 8 tensors carry the model")
        allocate (w(4))
        call a%get_weight(9, w, status=st)
        call check(st == NNL_ERR_ARGUMENT, "weight 9 of 8: NNL_ERR_ARGUMENT")
        call a%get_weight(1, w, status=st)
        call check(st == NNL_ERR_SHAPE, "4 values for a kernel of 12: NNL_ERR_SHAPE")
        call a%free()
        call b%free()
    end subroutine

    ! Token ids as integer(c_int32_t) (x(steps, samples)) through nnl_predict_typed:
    ! the same outputs as the ids given as reals; an id out of range is refused.
    subroutine token_ids()
        type(nnl_model) :: e
        integer(c_int32_t) :: ids(4, 2)
        real(c_float) :: fids(4, 2), pi(3, 4, 2), pf(3, 4, 2)
        integer :: s
        ids = reshape([0, 5, 2, 9, 1, 1, 7, 3], [4, 2])
        fids = real(ids, c_float)
        call e%create(seed=3)
        call e%add("Embedding(10, 3, input_length=4)")
        call e%predict(ids, pi)
        call e%predict(fids, pf)
        call check(all(pi == pf), "Embedding: int32 ids predict as the same ids given as reals")
        call check(any(pi /= 0), "Embedding: outputs are table rows")
        ids(2, 1) = 10
        call e%predict(ids, pi, status=s)
        call check(s == NNL_ERR_ARGUMENT, "Embedding: id 10 of input_dim 10 refused")
        call e%free()
    end subroutine

    ! R-LSTM from Fortran: a sine wave cut by nnl_sliding_windows into windows of
    ! 20 steps, LSTM(16) - Dense(1) trained a few epochs; the one-step forecast
    ! of held-out windows beats persistence (the last value seen) by RMSE.
    subroutine lstm_forecaster()
        integer, parameter :: n = 420, w = 20, ntrain = 320
        type(nnl_model) :: f
        real(c_float) :: series(1, n)
        real(c_float), allocatable :: xw(:, :, :), yw(:, :), p(:, :)
        real(c_double) :: rmse, rmse_persist
        real(c_double), allocatable :: loss(:)
        integer :: t, s, nt
        do t = 1, n
            series(1, t) = real(sin(0.15d0 * t) + 0.3d0 * sin(0.047d0 * t), c_float)
        end do
        call nnl_sliding_windows(series, w, xw, yw)
        call check(all(shape(xw) == [1, w, n - w]) .and. all(shape(yw) == [1, n - w]), &
                   "sliding windows: x(1, 20, 400), y(1, 400)")
        call check(all(xw(1, :, 7) == series(1, 7:7 + w - 1)) .and. yw(1, 7) == series(1, 7 + w), &
                   "sliding windows: x(:, :, t) = series(:, t : t+19), y(:, t) = series(:, t+20)")
        call f%create(seed=11)
        call f%add("LSTM(16, input_shape=(20, 1))")
        call f%add("Dense(1)")
        call f%compile("Adam(learning_rate=0.01)", "mse", "")
        call f%fit(xw(:, :, 1:ntrain), yw(:, 1:ntrain), epochs=20, batch_size=16, verbose=0)
        loss = f%history("loss")
        call check(loss(size(loss)) < loss(1), "forecaster: the loss went down")
        nt = n - w - ntrain
        allocate (p(1, nt))
        call f%predict(xw(:, :, ntrain + 1:), p)
        rmse = sqrt(sum((real(p(1, :), c_double) - yw(1, ntrain + 1:))**2) / nt)
        rmse_persist = sqrt(sum((real(xw(1, w, ntrain + 1:), c_double) - yw(1, ntrain + 1:))**2) / nt)
        print '(a, f8.5, a, f8.5)', "fortran LSTM forecaster: one-step RMSE ", rmse, ", persistence ", rmse_persist
        call check(rmse < 0.5d0 * rmse_persist, "forecaster: one-step RMSE under half persistence's")
        call f%free()
        ! Keras' Bidirectional(LSTM(8)) from a spec string: 2 x 4 x 8 x (1 + 8 + 1)
        ! parameters and a Dense(1), trained on the same windows
        call f%create(seed=12)
        call f%add("Bidirectional(LSTM(8), merge_mode='concat', input_shape=(20, 1))")
        call f%add("Dense(1)")
        call check(f%param_count() == 2 * 4 * 8 * (1 + 8 + 1) + 17, "Bidirectional(LSTM(8)): Keras' parameter count")
        call f%compile("Adam(learning_rate=0.01)", "mse", "")
        call f%fit(xw(:, :, 1:ntrain), yw(:, 1:ntrain), epochs=8, batch_size=16, verbose=0)
        loss = f%history("loss")
        call check(loss(size(loss)) < 0.5d0 * loss(1), "Bidirectional forecaster: the loss at least halved")
        call f%predict(xw(:, :, ntrain + 1:), p)
        rmse = sqrt(sum((real(p(1, :), c_double) - yw(1, ntrain + 1:))**2) / nt)
        print '(a, f8.5)', "fortran Bidirectional(LSTM) forecaster: one-step RMSE ", rmse
        call check(rmse < rmse_persist, "Bidirectional forecaster: one-step RMSE under persistence's")
        call nnl_sliding_windows(series(:, 1:5), 5, xw, yw, status=s)
        call check(s == NNL_ERR_ARGUMENT, "sliding windows: n <= window is NNL_ERR_ARGUMENT")
        call check(index(nnl_error_message(), "nnl_sliding_windows") == 1, "its message names the C call")
        call f%free()
    end subroutine

    ! The MPI procedures in a library without MPI: local answers (rank 0 of 1,
    ! the learning rate times 1) and NNL_ERR_UNSUPPORTED saying how to build
    ! with MPI. (tests/fortran/mpi_insitu.f90 tests them under mpirun.)
    subroutine mpi_not_built_in()
        type(nnl_model) :: d
        integer :: s, r, n
        call check(NNL_ERR_DISTRIBUTED == 10 .and. NNL_DATA_SHARDED == 0 .and. NNL_DATA_LOCAL == 1 .and. &
                   NNL_GLOBAL_BATCH == 2 .and. NNL_SYNC_BATCHNORM == 4, "MPI constants as nnlite.h's")
        call d%create(seed=1)
        call d%add("Dense(2, input_shape=(3,))")
        r = -1
        n = -1
        call d%mpi_rank(r, n)
        call check(r == 0 .and. n == 1, "mpi_rank of a local model: 0 of 1")
        call d%scale_learning_rate(status=s)
        call check(s == NNL_ERR_STATE, "scale_learning_rate before compile: NNL_ERR_STATE")
        call d%compile("SGD(learning_rate=0.25)", "mse")
        call d%scale_learning_rate()
        call check(abs(d%learning_rate() - 0.25d0) < 1d-12, "scale_learning_rate on one process: unchanged")
        call d%distribute(status=s)
        call check(s == NNL_ERR_UNSUPPORTED, "distribute without MPI built in: NNL_ERR_UNSUPPORTED")
        call check(index(nnl_error_message(), "MPI=1") > 0, "its message says how to build with MPI: " // &
                   nnl_error_message())
        call d%distribute(0, NNL_DATA_LOCAL, status=s)
        call check(s == NNL_ERR_UNSUPPORTED, "distribute(comm, flags) without MPI: NNL_ERR_UNSUPPORTED")
        call nnl_mpi_init(s)
        call check(s == NNL_ERR_UNSUPPORTED, "nnl_mpi_init without MPI: NNL_ERR_UNSUPPORTED")
        call nnl_mpi_finalize(s)
        call check(s == NNL_ERR_UNSUPPORTED, "nnl_mpi_finalize without MPI: NNL_ERR_UNSUPPORTED")
        call d%free()
    end subroutine

    ! Image files (since 0.7): x(channels, width, height) is C's (height, width,
    ! channels); a PNG round trip, and a data set from class folders.
    subroutine image_files()
        real(c_float), allocatable :: x(:, :, :), back(:, :, :), d(:, :, :, :)
        integer(c_int32_t), allocatable :: y(:)
        character(len=:), allocatable :: names(:)
        character(len=256) :: tmp
        character(len=:), allocatable :: root
        integer :: s, i, j, k
        call get_environment_variable("TMPDIR", tmp)
        if (len_trim(tmp) == 0) tmp = "/tmp"
        root = trim(tmp) // "/nnlite_fortran_images"
        allocate (x(3, 4, 2))
        do j = 1, 2
            do i = 1, 4
                do k = 1, 3
                    x(k, i, j) = real(10 * k + 40 * i + 50 * (j - 1), c_float)
                end do
            end do
        end do
        if (.not. nnl_has_feature("images")) then
            call nnl_save_image(root // ".png", x, status=s)
            call check(s == NNL_ERR_UNSUPPORTED, "nnl_save_image without stb: NNL_ERR_UNSUPPORTED")
            return
        end if
        call nnl_save_image(root // ".png", x)
        call nnl_load_image(root // ".png", back)
        call check(all(shape(back) == [3, 4, 2]), "nnl_load_image: x(channels, width, height)")
        call check(all(back == x), "nnl_save_image + nnl_load_image: the same pixels")
        call nnl_load_image(root // ".png", back, channels=1, height=1, width=2, scale=1.0 / 255)
        call check(all(shape(back) == [1, 2, 1]), "nnl_load_image resized to 1 x 2, grayscale")
        call check(all(back >= 0 .and. back <= 1), "nnl_load_image scaled to [0, 1]")
        call nnl_load_image(root // "_missing.png", back, status=s)
        call check(s == NNL_ERR_IO, "nnl_load_image of a missing file: NNL_ERR_IO")
        call delete(root // ".png")
        call execute_command_line("rm -rf " // root // " && mkdir -p " // root // "/cats " // root // "/dogs")
        call nnl_save_image(root // "/dogs/1.png", x)
        call nnl_save_image(root // "/cats/1.png", x)
        call nnl_save_image(root // "/cats/2.png", x)
        call nnl_image_dataset_from_directory(root, d, y, names, shuffle=.false.)
        call check(all(shape(d) == [3, 4, 2, 3]), "dataset: x(channels, width, height, n)")
        call check(all(y == [0, 0, 1]), "dataset: labels by sorted class folder")
        call check(size(names) == 2, "dataset: two class names")
        if (size(names) == 2) call check(names(1) == "cats" .and. names(2) == "dogs", "dataset: class names")
        call check(all(d(:, :, :, 3) == x), "dataset: the pixels of each file")
        call nnl_image_dataset_from_directory(root, d, y, names, height=2, width=2, channels=1, seed=7_c_int64_t, &
                                              validation_split=0.34d0, subset="validation")
        call check(all(shape(d) == [1, 2, 2, 1]), "dataset: validation subset of 1, resized, grayscale")
        call nnl_image_dataset_from_directory(root // "/cats", d, y, names, status=s)
        call check(s == NNL_ERR_FORMAT, "dataset of a folder without class folders: NNL_ERR_FORMAT")
        call execute_command_line("rm -rf " // root)
    end subroutine

    ! Keras' own files (issue 16): mlp.keras, mlp_tf2.h5 and mlp_k3.h5 of
    ! tests/reference/keras/ (written with h5py in Keras' layouts by
    ! tests/reference/make_keras_files.py) open with model%load and predict
    ! what the same architecture, built here, gives with the same weights
    ! read from mlp.npz (the "npz route"), within 1e-6; the weights are the
    ! npz's bit for bit. The folder: NNL_KERAS_FIXTURES (check_fortran.sh sets
    ! it), else ../../tests/reference/keras from this program's folder
    ! (build/fortran/). Without HDF5 the files are refused with
    ! NNL_ERR_UNSUPPORTED naming the package, and the rest is skipped.
    subroutine keras_files()
        character(len=10), parameter :: kinds(3) = [character(len=10) :: "mlp.keras", "mlp_tf2.h5", "mlp_k3.h5"]
        type(nnl_model) :: k, ref
        character(len=4096) :: kdir, exe
        real(c_float) :: xk(6, 5), pk(3, 5), pr(3, 5), worst
        real(c_float), allocatable :: wa(:), wb(:)
        integer(c_int64_t), allocatable :: sh(:)
        integer :: s, i, j, w
        call get_environment_variable("NNL_KERAS_FIXTURES", kdir)
        if (len_trim(kdir) == 0) then
            call get_command_argument(0, exe)
            kdir = exe(1:index(exe, "/", back=.true.)) // "../../tests/reference/keras"
        end if
        ! x(features, samples): the inputs of tests/unit_keras.hpp, sin(0.37 i + 0.5)
        do j = 1, 5
            do i = 1, 6
                xk(i, j) = real(sin(0.37d0 * ((j - 1) * 6 + i - 1) + 0.5d0), c_float)
            end do
        end do
        if (.not. nnl_has_feature("hdf5")) then
            print '(a)', "fortran tests: Keras files SKIPPED: the library has no HDF5 " // &
                "(Debian: apt-get install libhdf5-dev, then rebuild)"
            call k%load(trim(kdir) // "/mlp.keras", status=s)
            call check(s == NNL_ERR_UNSUPPORTED .and. index(nnl_error_message(), "libhdf5-dev") > 0, &
                       "a .keras file without HDF5: NNL_ERR_UNSUPPORTED naming libhdf5-dev: " // nnl_error_message())
            call k%free()
            return
        end if
        ! the npz route: the fixture's architecture (make_keras_files.py's "mlp"), its weights from mlp.npz
        call ref%create(seed=1)
        call ref%add("Dense(8, activation='relu', input_shape=(6,))")
        call ref%add("Dropout(0.5)")
        call ref%add("Dense(3, activation='softmax')")
        call ref%load_weights(trim(kdir) // "/mlp.npz", status=s)
        call check(s == NNL_OK, "load_weights of " // trim(kdir) // "/mlp.npz: " // nnl_error_message())
        if (s /= NNL_OK) then
            call ref%free()
            return
        end if
        call ref%predict(xk, pr)
        do w = 1, size(kinds)
            call k%load(trim(kdir) // "/" // trim(kinds(w)), status=s)
            call check(s == NNL_OK, "model%load of " // trim(kinds(w)) // ": " // nnl_error_message())
            if (s /= NNL_OK) cycle
            call check(k%param_count() == ref%param_count() .and. k%weight_count() == ref%weight_count(), &
                       trim(kinds(w)) // ": the parameters of the architecture built here")
            do i = 1, min(k%weight_count(), ref%weight_count())
                sh = k%weight_shape(i)
                allocate (wa(product(sh)), wb(product(sh)))
                call k%get_weight(i, wa)
                call ref%get_weight(i, wb, status=s)
                call check(s == NNL_OK .and. all(wa == wb), trim(kinds(w)) // ": weight " // &
                           k%weight_name(i) // " is mlp.npz's, bit for bit")
                deallocate (wa, wb)
            end do
            pk = -1
            call k%predict(xk, pk)
            worst = maxval(abs(pk - pr))
            print '(a, es9.2)', "fortran Keras " // trim(kinds(w)) // ": max |difference| against the npz route ", &
                worst
            ! every element (maxval skips NaNs; a NaN fails the comparison)
            call check(all(abs(pk - pr) <= 1e-6), trim(kinds(w)) // ": predictions within 1e-6 of the npz route")
            call check(all(abs(sum(pk, 1) - 1) < 1e-5), trim(kinds(w)) // ": softmax columns sum to 1")
            call k%free()
        end do
        call ref%free()
    end subroutine

    subroutine delete(path)
        character(len=*), intent(in) :: path
        integer :: u, ios
        open (newunit=u, file=path, status="old", iostat=ios)
        if (ios == 0) close (u, status="delete")
    end subroutine
end program test_nnlite
