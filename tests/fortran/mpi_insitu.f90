! mpi_insitu.f90 - in-situ training over MPI from Fortran (issue 13): every
! rank of a simulation trains ONE shared surrogate on the data it generates
! itself, and no sample ever leaves its rank. Run by scripts/check_mpi.sh
! under `mpirun -np 2` and `-np 4 --oversubscribe`; exits nonzero when a
! check fails.
!
! The simulation (as examples/fortran/surrogate.f90): damped pendulums
!     theta'' = -(g/L) sin(theta) - c theta'
! advanced by steps of dt = 0.1 with RK4 (50 substeps). The ensemble is
! decomposed by initial angle: rank r of N owns the pendulums started in its
! slice r of [-2.6, 2.6] rad (and a rank-dependent number of them), so each
! rank sees states no other rank sees. Each rank keeps its (state, increment
! over dt) pairs and all ranks train one model with
! model%distribute(MPI_COMM_WORLD, NNL_DATA_LOCAL): gradients are averaged,
! the data stays put.
!
! Checks: (a) every rank ends with the same weights (a checksum, MPI_Allreduce
! MIN and MAX); (b) on held-out pendulums (each rank new ones in its slice)
! the surrogate's one-step error beats persistence (20-fold) and the
! small-angle (linearised) pendulum (10-fold), and a 4 s rollout with the
! network alone ends with under half the small-angle pendulum's error;
! (c) model%evaluate, collective, reduces over every rank's data: it equals
! the error summed by hand with MPI_Allreduce; (d) bad flags fail with the
! status argument on every rank. Rank 0 prints the report.
program mpi_insitu
    use mpi
    use nnlite
    implicit none
    integer, parameter :: dp = kind(1d0)
    real(dp), parameter :: g_l = 9.81_dp, damping = 0.3_dp, dt = 0.1_dp, theta_max = 2.6_dp
    real(dp), parameter :: scale_theta = 3.2_dp, scale_omega = 8.0_dp, lr0 = 0.001_dp
    integer, parameter :: nsub = 50, nsteps = 50, ntest_traj = 4, ntest_steps = 40, epochs = 150, batch = 32
    type(nnl_model) :: net
    real(c_float), allocatable :: x(:, :), y(:, :), xt(:, :), yt(:, :), p(:, :), w(:)
    real(dp), allocatable :: start(:, :)
    integer, allocatable :: counts(:)
    real(dp) :: s(2), sums(6), tot(6), roll(3), roll_tot(3), res(1), chk, chk_min, chk_max, t0, t_fit
    real(dp) :: mse_net, mse_persist, mse_lin
    real(dp), allocatable :: loss(:)
    integer :: ierr, provided, rank, nranks, n, ntraj, i, j, k, st, fails
    integer :: mrank, msize

    call MPI_Init_thread(MPI_THREAD_FUNNELED, provided, ierr)
    call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
    call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
    fails = 0

    ! ---- the simulation: this rank's pendulums, (state, increment) pairs ----
    ntraj = 8 + 4 * mod(rank, 3)
    call seed_for(rank)
    call trajectories(ntraj, nsteps, x, y, start)
    allocate (counts(nranks))
    n = size(x, 2)
    call MPI_Gather(n, 1, MPI_INTEGER, counts, 1, MPI_INTEGER, 0, MPI_COMM_WORLD, ierr)

    ! ---- one shared model, trained where the data is ----
    call net%create(seed=7)
    call net%add("Dense(48, activation='tanh', input_shape=(2,))")
    call net%add("Dense(48, activation='tanh')")
    call net%add("Dense(2)")
    call net%compile("Adam(learning_rate=0.001)", "mse")
    ! (d) the flags are checked on every rank before anything is collective
    call net%distribute(MPI_COMM_WORLD, 8, status=st)
    call check(st == NNL_ERR_ARGUMENT, "distribute with unknown flags: NNL_ERR_ARGUMENT")
    call net%distribute(MPI_COMM_WORLD, ior(NNL_DATA_LOCAL, NNL_GLOBAL_BATCH), status=st)
    call check(st == NNL_ERR_ARGUMENT, "NNL_DATA_LOCAL with NNL_GLOBAL_BATCH: NNL_ERR_ARGUMENT")
    call net%distribute(MPI_COMM_WORLD, NNL_DATA_LOCAL)
    call net%mpi_rank(mrank, msize)
    call check(mrank == rank .and. msize == nranks, "model%mpi_rank: MPI_COMM_WORLD's rank and size")
    ! the global batch is nranks x 32: the linear scaling rule
    call net%scale_learning_rate()
    call check(abs(net%learning_rate() - lr0 * nranks) < 1d-9, "scale_learning_rate: lr x ranks")
    t0 = MPI_Wtime()
    call net%fit(x, y, epochs=epochs, batch_size=batch, seed=3, verbose=0)
    t_fit = MPI_Wtime() - t0
    loss = net%history("loss")

    ! (a) the replicas agree
    chk = 0
    k = 0
    do i = 1, net%weight_count()
        allocate (w(product(net%weight_shape(i))))
        call net%get_weight(i, w)
        do j = 1, size(w)
            k = k + 1
            chk = chk + real(w(j), dp) * (1 + mod(k, 7))
        end do
        deallocate (w)
    end do
    call MPI_Allreduce(chk, chk_min, 1, MPI_DOUBLE_PRECISION, MPI_MIN, MPI_COMM_WORLD, ierr)
    call MPI_Allreduce(chk, chk_max, 1, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr)
    call check(chk_min == chk_max, "every rank holds the same weights")

    ! (b) held-out pendulums, new on every rank (in its slice)
    call seed_for(rank + 100000)
    call trajectories(ntest_traj, ntest_steps, xt, yt, start)
    n = size(xt, 2)
    allocate (p(2, n))
    call net%predict(xt, p) ! local: no other rank takes part
    sums = 0
    do i = 1, n
        s = real(xt(:, i), dp) * [scale_theta, scale_omega]
        sums(1) = sums(1) + sum((real(p(:, i), dp) - yt(:, i))**2)
        sums(2) = sums(2) + sum(real(yt(:, i), dp)**2) ! persistence: no change
        sums(3) = sums(3) + sum((increment(s, step(s, .true.)) - yt(:, i))**2)
    end do
    sums(4) = 2 * n
    ! a rollout: each pendulum advanced ntest_steps steps by the network alone
    roll = 0
    do j = 1, ntest_traj
        call rollout(start(:, j), roll)
    end do
    call MPI_Allreduce(sums, tot, 6, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
    call MPI_Allreduce(roll, roll_tot, 3, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
    roll_tot = roll_tot / (ntest_traj * nranks)
    mse_net = tot(1) / tot(4)
    mse_persist = tot(2) / tot(4)
    mse_lin = tot(3) / tot(4)
    call check(mse_net < 0.05_dp * mse_persist, "one step: the surrogate beats persistence 20-fold")
    call check(mse_net < 0.1_dp * mse_lin, "one step: the surrogate beats the small-angle pendulum 10-fold")
    call check(roll_tot(1) < 0.5_dp * roll_tot(2) .and. roll_tot(1) < roll_tot(3), &
               "rollout: the surrogate's error under half the small-angle pendulum's, and under persistence's")
    ! (c) evaluate is collective and reduces over every rank's (different) data
    call net%evaluate(xt, yt, res)
    call check(abs(res(1) - mse_net) <= 1d-4 * mse_net, "evaluate = the MSE reduced by hand over the ranks")

    if (rank == 0) then
        print '(a, i0, a, f3.1, a, f3.1, a)', "mpi_insitu: ", nranks, " ranks, each its own pendulums (theta0 slices of [-", &
            theta_max, ", ", theta_max, "] rad)"
        print '(a, *(1x, i0))', "  samples per rank, never sent:", counts
        print '(a, i0, a, i0, a, f6.4, a, es10.3, a, es10.3, a, f6.2, a)', "  NNL_DATA_LOCAL fit: ", epochs, &
            " epochs, batch ", batch, " per rank, lr ", net%learning_rate(), "; loss ", loss(1), " -> ", &
            loss(size(loss)), " (", t_fit, " s)"
        print '(a, es24.16)', "  replicas: weight checksum min = max =", chk_min
        print '(a, i0, a, i0, a)', "  held-out: ", ntest_traj * nranks, " new pendulums, ", int(tot(4) / 2), " states"
        print '(a, 3es11.3, a, es11.3)', "  one-step MSE  net / persistence / small-angle:", mse_net, mse_persist, &
            mse_lin, "; evaluate", res(1)
        print '(a, f4.1, a, 3f9.4)', "  rollout ", ntest_steps * dt, " s, mean |theta error| (rad) net / small-angle /"// &
            " persistence:", roll_tot
    end if
    call MPI_Allreduce(MPI_IN_PLACE, fails, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
    if (rank == 0) then
        if (fails == 0) then
            print '(a)', "mpi_insitu: ok"
        else
            print '(a, i0, a)', "mpi_insitu: ", fails, " check(s) FAILED"
        end if
    end if
    call net%free() ! before MPI_Finalize: the model holds a duplicate of the communicator
    call MPI_Finalize(ierr)
    if (fails /= 0) error stop 1

contains

    subroutine check(ok, what)
        logical, intent(in) :: ok
        character(len=*), intent(in) :: what
        if (.not. ok) then
            write (0, '(a, i0, a)') "[rank ", rank, "] FAIL: " // what
            fails = fails + 1
        end if
    end subroutine

    subroutine seed_for(k)
        integer, intent(in) :: k
        integer :: m, i
        integer, allocatable :: put(:)
        call random_seed(size=m)
        allocate (put(m))
        put = [(104729 * k + 7919 * i + 1, i=1, m)]
        call random_seed(put=put)
    end subroutine

    ! ntr pendulums started in this rank's slice, nst steps each: inputs
    ! x(2, ntr*nst) (scaled states) and targets y (scaled increments per dt);
    ! st0(:, j) is pendulum j's start
    subroutine trajectories(ntr, nst, x, y, st0)
        integer, intent(in) :: ntr, nst
        real(c_float), allocatable, intent(out) :: x(:, :), y(:, :)
        real(dp), allocatable, intent(out) :: st0(:, :)
        real(dp) :: u(2), lo, s(2), s1(2)
        integer :: j, i, k
        allocate (x(2, ntr * nst), y(2, ntr * nst), st0(2, ntr))
        lo = -theta_max + 2 * theta_max * rank / nranks
        k = 0
        do j = 1, ntr
            call random_number(u)
            s = [lo + u(1) * 2 * theta_max / nranks, (2 * u(2) - 1) * 1.5_dp]
            st0(:, j) = s
            do i = 1, nst
                s1 = step(s, .false.)
                k = k + 1
                x(:, k) = real(s / [scale_theta, scale_omega], c_float)
                y(:, k) = real(increment(s, s1), c_float)
                s = s1
            end do
        end do
    end subroutine

    function increment(s, s1) result(t)
        real(dp), intent(in) :: s(2), s1(2)
        real(dp) :: t(2)
        t = (s1 - s) / dt / [scale_omega, scale_omega * g_l]
    end function

    ! one step of dt: RK4 with nsub substeps of the pendulum, or of the
    ! small-angle pendulum (sin(theta) ~ theta) when linear
    function step(s0, linear) result(s)
        real(dp), intent(in) :: s0(2)
        logical, intent(in) :: linear
        real(dp) :: s(2), k1(2), k2(2), k3(2), k4(2), h
        integer :: i
        h = dt / nsub
        s = s0
        do i = 1, nsub
            k1 = rhs(s, linear)
            k2 = rhs(s + 0.5_dp * h * k1, linear)
            k3 = rhs(s + 0.5_dp * h * k2, linear)
            k4 = rhs(s + h * k3, linear)
            s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        end do
    end function

    function rhs(v, linear) result(d)
        real(dp), intent(in) :: v(2)
        logical, intent(in) :: linear
        real(dp) :: d(2)
        d = [v(2), -g_l * merge(v(1), sin(v(1)), linear) - damping * v(2)]
    end function

    ! pendulum s0 advanced ntest_steps steps three ways; adds each one's final
    ! |theta error| against the true solver to acc (net, small-angle, persistence)
    subroutine rollout(s0, acc)
        real(dp), intent(in) :: s0(2)
        real(dp), intent(inout) :: acc(3)
        real(c_float) :: xin(2, 1), dout(2, 1)
        real(dp) :: s_true(2), s_net(2), s_lin(2)
        integer :: i
        s_true = s0
        s_net = s0
        s_lin = s0
        do i = 1, ntest_steps
            s_true = step(s_true, .false.)
            s_lin = step(s_lin, .true.)
            xin(:, 1) = real(s_net / [scale_theta, scale_omega], c_float)
            call net%predict(xin, dout)
            s_net = s_net + dt * real(dout(:, 1), dp) * [scale_omega, scale_omega * g_l]
        end do
        acc = acc + abs([s_net(1), s_lin(1), s0(1)] - s_true(1))
    end subroutine
end program mpi_insitu
