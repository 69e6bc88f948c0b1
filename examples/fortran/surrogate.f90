! surrogate.f90 - a trained network replacing the expensive step of a
! time-stepping simulation (the HPC use of nnlite from Fortran).
!
! The simulation: an ensemble of damped, driven-free pendulums
!     theta'' = -(g/L) sin(theta) - c theta'
! advanced by steps of dt = 0.05. The "expensive" solver is RK4 with 100
! substeps per step. Phase 1 runs the true solver on 64 pendulums for 150
! steps and keeps every (state, next state) pair; phase 2 trains
! Dense(64, tanh) - Dense(64, tanh) - Dense(2) on those pairs (the network
! learns the increment (next - state) / dt); phase 3 starts 256 new pendulums
! and advances them with the network alone - one predict call per step for
! the whole ensemble, x(2, 256) passed without copies - next to the true
! solver, printing the error against it as the simulation goes.
!
!   surrogate [--epochs N] (default 150)
program surrogate
    use nnlite
    implicit none
    integer, parameter :: dp = kind(1d0)
    real(dp), parameter :: g_l = 9.81_dp, damping = 0.3_dp, dt = 0.05_dp
    integer, parameter :: nsub = 100, ntrain_traj = 64, ntrain_steps = 150, nens = 256, nsteps = 200
    real(dp), parameter :: scale_theta = 3.2_dp, scale_omega = 8.0_dp
    type(nnl_model) :: net
    real(c_float), allocatable :: x(:, :), y(:, :), xin(:, :), dout(:, :)
    real(dp) :: s(2), s_next(2), ens_true(2, nens), ens_net(2, nens)
    real(dp) :: err, maxerr, t_true, t_net, t0, t1, energy_true, energy_net
    integer :: i, k, j, epochs, nargs
    character(len=32) :: arg
    real(dp) :: r(2)

    epochs = 150
    nargs = command_argument_count()
    i = 1
    do while (i <= nargs)
        call get_command_argument(i, arg)
        if (arg == "--epochs" .and. i < nargs) then
            call get_command_argument(i + 1, arg)
            read (arg, *, iostat=k) epochs
            if (k /= 0 .or. epochs < 1) call usage("option '--epochs' needs a positive whole number (got '" // &
                                                   trim(arg) // "')")
            i = i + 2
        else if (arg == "--epochs") then
            call usage("option '--epochs' needs a value")
        else if (arg(1:1) == "-") then
            call usage("unknown option '" // trim(arg) // "' (known: --epochs N)")
        else
            call usage("unexpected argument '" // trim(arg) // "' (surrogate generates its data)")
        end if
    end do
    call random_seed(put=[(12345 + i, i=1, 64)])

    ! ---- phase 1: the true solver generates the training states ----
    allocate (x(2, ntrain_traj * ntrain_steps), y(2, ntrain_traj * ntrain_steps))
    k = 0
    do j = 1, ntrain_traj
        call random_number(r)
        s = [(2 * r(1) - 1) * 3.0_dp, (2 * r(2) - 1) * 6.0_dp]
        do i = 1, ntrain_steps
            s_next = true_step(s)
            k = k + 1
            x(:, k) = real(s / [scale_theta, scale_omega], c_float)
            y(:, k) = real((s_next - s) / dt / [scale_omega, scale_omega * g_l], c_float)
            s = s_next
        end do
    end do
    print '(a, i0, a)', "phase 1: ", k, " (state, next state) pairs from the RK4 solver (100 substeps per step)"

    ! ---- phase 2: train the surrogate ----
    call net%create(seed=7)
    call net%add("Dense(64, activation='tanh', input_shape=(2,))")
    call net%add("Dense(64, activation='tanh')")
    call net%add("Dense(2)")
    call net%compile("Adam(learning_rate=0.003)", "mse")
    call net%fit(x, y, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0)
    associate (l => net%history("loss"), v => net%history("val_loss"))
        print '(a, i0, a, es10.3, a, es10.3)', "phase 2: trained ", size(l), " epochs; loss ", l(size(l)), &
            "  val_loss ", v(size(v))
    end associate

    ! ---- phase 3: the network replaces the solver inside the time loop ----
    do j = 1, nens
        call random_number(r)
        ens_true(:, j) = [(2 * r(1) - 1) * 2.0_dp, (2 * r(2) - 1) * 2.0_dp]
    end do
    ens_net = ens_true
    allocate (xin(2, nens), dout(2, nens))
    t_true = 0
    t_net = 0
    print '(a)', "phase 3: 256 new pendulums, surrogate vs RK4"
    print '(a)', "  step     t   theta(1) true  theta(1) net   mean |err|    max |err|   energy true  energy net"
    do i = 1, nsteps
        call cpu_time(t0)
        do j = 1, nens
            ens_true(:, j) = true_step(ens_true(:, j))
        end do
        call cpu_time(t1)
        t_true = t_true + (t1 - t0)
        ! surrogate step for the whole ensemble: one inference call
        call cpu_time(t0)
        xin(1, :) = real(ens_net(1, :) / scale_theta, c_float)
        xin(2, :) = real(ens_net(2, :) / scale_omega, c_float)
        call net%predict(xin, dout, batch_size=nens)
        ens_net(1, :) = ens_net(1, :) + dt * dout(1, :) * scale_omega
        ens_net(2, :) = ens_net(2, :) + dt * dout(2, :) * scale_omega * g_l
        call cpu_time(t1)
        t_net = t_net + (t1 - t0)
        if (mod(i, 20) == 0 .or. i == 1) then
            err = sum(abs(ens_net(1, :) - ens_true(1, :))) / nens
            maxerr = maxval(abs(ens_net(1, :) - ens_true(1, :)))
            energy_true = sum(0.5_dp * ens_true(2, :)**2 + g_l * (1 - cos(ens_true(1, :)))) / nens
            energy_net = sum(0.5_dp * ens_net(2, :)**2 + g_l * (1 - cos(ens_net(1, :)))) / nens
            print '(i6, f7.2, 2f14.5, 2es13.3, 2f12.4)', i, i * dt, ens_true(1, 1), ens_net(1, 1), err, maxerr, &
                energy_true, energy_net
        end if
    end do
    print '(a, f8.4, a, f8.4, a)', "time in the loop: RK4 ", t_true, " s, surrogate ", t_net, " s"
    err = sum(abs(ens_net(1, :) - ens_true(1, :))) / nens
    print '(a, es10.3, a)', "final mean |theta error| ", err, " rad"
    call net%free()
    if (.not. (err < 0.2_dp)) error stop "surrogate: the network drifted from the solver (mean error >= 0.2 rad)"

contains

    function rhs(s) result(d)
        real(dp), intent(in) :: s(2)
        real(dp) :: d(2)
        d = [s(2), -g_l * sin(s(1)) - damping * s(2)]
    end function

    ! the expensive step: RK4 with nsub substeps
    function true_step(s0) result(s)
        real(dp), intent(in) :: s0(2)
        real(dp) :: s(2), k1(2), k2(2), k3(2), k4(2), h
        integer :: n
        h = dt / nsub
        s = s0
        do n = 1, nsub
            k1 = rhs(s)
            k2 = rhs(s + 0.5_dp * h * k1)
            k3 = rhs(s + 0.5_dp * h * k2)
            k4 = rhs(s + h * k3)
            s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        end do
    end function

    subroutine usage(why)
        character(len=*), intent(in) :: why
        write (0, '(a)') "surrogate: " // why
        write (0, '(a)') "usage: surrogate [--epochs N (150)]"
        stop 2
    end subroutine usage
end program surrogate
