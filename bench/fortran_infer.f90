! fortran_infer.f90 - batched inference from Fortran arrays, without copies:
! K-MLP (Flatten(28, 28) - Dense(128, relu) - Dense(10, softmax), as
! bench/models.h; the weights as initialised, seed 1) called through the
! Fortran binding's model%predict on sections x(:, :, o:o+B-1) of an array
! x(28, 28, N) (the binding reverses the shape: nnlite sees (B, 28, 28), the
! layout Flatten(input_shape=(28, 28)) takes; a contiguous section is passed
! by address, c_loc, no copy), at B = 1, 16 and 256 samples a call
! (batch_size=B). As bench_nnlite.c's batched inference: the number of calls
! is set from an untimed run of about S / 4 seconds, then 3 timed repetitions.
!
! build (after make lib and make build/libnnlite_fortran.a; bench/run.sh does it):
!   gfortran -O2 -ffpe-summary=none -Ibuild/fortran bench/fortran_infer.f90 \
!       build/libnnlite_fortran.a build/libnnlite.a $(make -s print-libs) -lstdc++ -o build/bench/fortran_infer
! usage: fortran_infer THREADS [--seconds S]   (S: about S seconds a repetition, default 0.3)
! prints one line per B (key=value fields; bench/run.sh and bench/report.py read them):
!   infer fw=nnlite-fortran model=kmlp data=synth threads=T setting=- batch=B calls=N reps=3
!         samples_per_s=X min=L max=H seconds=S
! (samples_per_s: the median of the repetitions; min, max theirs; seconds: the three together)
program fortran_infer
    use nnlite
    use, intrinsic :: iso_fortran_env, only: int64, real64
    implicit none
    integer, parameter :: n = 2400 ! 20 batches of 120 samples, as bench_nnlite's synthetic K-MLP data
    integer, parameter :: bsizes(3) = [1, 16, 256]
    type(nnl_model) :: model
    real(c_float), allocatable :: x(:, :, :), p(:, :)
    real(real64) :: secs, t, w(3), sps(3)
    integer :: threads, ib, b, r, i, nargs, ios
    integer(int64) :: c, calls
    character(len=64) :: arg

    threads = 1
    secs = 0.3_real64
    nargs = command_argument_count()
    i = 1
    do while (i <= nargs)
        call get_command_argument(i, arg)
        if (arg == "--seconds" .and. i < nargs) then
            call get_command_argument(i + 1, arg)
            read (arg, *, iostat=ios) secs
            if (ios /= 0 .or. .not. (secs > 0)) error stop "fortran_infer: --seconds needs a positive number"
            i = i + 2
        else
            read (arg, *, iostat=ios) threads
            if (ios /= 0 .or. threads < 1) error stop "fortran_infer: usage: fortran_infer THREADS [--seconds S]"
            i = i + 1
        end if
    end do

    call model%create(seed=1)
    call nnl_set_threads(threads)
    call model%add("Flatten(input_shape=(28, 28))")
    call model%add("Dense(128, activation='relu')")
    call model%add("Dense(10, activation='softmax')")
    call model%compile("Adam(learning_rate=0.001)", "sparse_categorical_crossentropy", "accuracy")
    allocate (x(28, 28, n), p(10, maxval(bsizes)))
    call random_number(x) ! uniform noise in [0, 1), as the C driver's synthetic data

    do ib = 1, size(bsizes)
        b = bsizes(ib)
        c = 1
        t = run(b, c)
        do while (t < secs / 4) ! doubling: warm, and a first rate
            c = 2 * c
            t = run(b, c)
        end do
        calls = max(3_int64, int(real(c, real64) * secs / t, int64) + 1)
        do r = 1, 3
            w(r) = run(b, calls)
            sps(r) = real(calls, real64) * b / w(r)
        end do
        print '(a, i0, a, i0, a, i0, a, f0.1, a, f0.1, a, f0.1, a, f0.2)', &
            "infer fw=nnlite-fortran model=kmlp data=synth threads=", threads, " setting=- batch=", b, " calls=", &
            calls, " reps=3 samples_per_s=", median3(sps), " min=", minval(sps), " max=", maxval(sps), &
            " seconds=", sum(w)
    end do
    call model%free()

contains

    !> Seconds of `calls` predict calls of b samples each, walking through x.
    function run(b, calls) result(secs_)
        integer, intent(in) :: b
        integer(int64), intent(in) :: calls
        real(real64) :: secs_
        integer(int64) :: k, t0, t1, rate
        integer :: o
        o = 1
        call system_clock(t0, rate)
        do k = 1, calls
            call model%predict(x(:, :, o:o + b - 1), p(:, 1:b), batch_size=b)
            o = o + b
            if (o + b - 1 > n) o = 1
        end do
        call system_clock(t1)
        secs_ = real(t1 - t0, real64) / real(rate, real64)
    end function

    pure function median3(v) result(m)
        real(real64), intent(in) :: v(3)
        real(real64) :: m
        m = max(min(v(1), v(2)), min(max(v(1), v(2)), v(3)))
    end function

end program
