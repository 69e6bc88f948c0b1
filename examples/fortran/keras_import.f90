! keras_import.f90 - a model trained in Keras, run from Fortran: model%load
! opens Keras' own files by their content (model.save("m.keras") of Keras 3,
! model.save("m.h5") of tf.keras 2.x, Keras 2 or Keras 3), prints the
! summary and predicts three samples, passed as x(features, samples).
!
! Without a path it opens the MLP the tests wrote with h5py in Keras' layout
! (tests/reference/keras/mlp.keras: 6 inputs, 3 softmax outputs), found from
! the program's folder; a model of your own needs x and p shaped for it.
! Needs nnlite built with HDF5 (Debian libhdf5-dev; nnl_has_feature("hdf5")).
!
! --compare-npz W checks the import against the same weights given another
! way, as numpy writes them (np.savez("w.npz", *model.get_weights()) in
! Keras): the same architecture (model%to_json of the loaded model, then
! model%from_json) gets W's weights (model%load_weights) and predicts the
! same samples; the largest |difference| is printed, and the program stops
! with status 1 when it is over 1e-6.
!
!   keras_import [model.keras or model.h5] [--compare-npz weights.npz]
!   e.g. keras_import tests/reference/keras/mlp_tf2.h5 --compare-npz tests/reference/keras/mlp.npz
program keras_import
    use nnlite
    implicit none
    character(len=*), parameter :: usage_line = "usage: keras_import [model.keras or model.h5] [--compare-npz weights.npz]"
    real(c_float), parameter :: tolerance = 1e-6
    type(nnl_model) :: net, ref
    character(len=4096) :: path, arg, npz
    real(c_float) :: x(6, 3), p(3, 3), pr(3, 3), worst
    integer :: i, j, nargs
    logical :: have_path

    call get_command_argument(0, arg)
    i = index(arg, "/", back=.true.)
    path = arg(1:i) // "../../tests/reference/keras/mlp.keras"
    npz = ""
    have_path = .false.
    nargs = command_argument_count()
    i = 1
    do while (i <= nargs)
        call get_command_argument(i, arg)
        if (arg == "-h" .or. arg == "--help") then
            print '(a)', usage_line
            print '(a)', "  --compare-npz W  also predict with the same architecture and the weights of W (.npz, " // &
                "Keras' get_weights() order) and print the largest |difference| (stop 1 above 1e-6)"
            stop
        else if (arg == "--compare-npz") then
            if (i == nargs) call usage("option '--compare-npz' needs a .npz file")
            i = i + 1
            call get_command_argument(i, npz)
            if (len_trim(npz) == 0) call usage("option '--compare-npz' needs a .npz file")
        else if (arg(1:1) == "-") then
            call usage("unknown option '" // trim(arg) // "'")
        else if (have_path) then
            call usage("unexpected argument '" // trim(arg) // "' (one model path)")
        else
            path = arg
            have_path = .true.
        end if
        i = i + 1
    end do
    if (.not. nnl_has_feature("hdf5")) write (0, '(a)') "keras_import: this nnlite has no HDF5: Keras files " // &
        "will be refused (Debian: apt-get install libhdf5-dev, then rebuild)"

    call net%load(trim(path))
    print '(a)', "loaded " // trim(path)
    call net%summary()
    do j = 1, 3
        do i = 1, 6
            x(i, j) = real(mod((j - 1) * 6 + i - 1, 10), c_float) / 10
        end do
    end do
    call net%predict(x, p)
    do j = 1, 3
        print '(a, i0, a, *(f10.6))', "sample ", j - 1, ":", p(:, j)
    end do

    if (len_trim(npz) > 0) then
        ! the npz route: the loaded model's architecture, the weights of the .npz
        call ref%from_json(net%to_json())
        call ref%load_weights(trim(npz))
        call ref%predict(x, pr)
        call ref%free()
        worst = maxval(abs(p - pr))
        ! a NaN compares false: any element not within the tolerance fails
        if (all(abs(p - pr) <= tolerance)) then
            print '(a, es9.2, a)', "npz route (" // trim(npz) // "): max |difference| ", worst, &
                " (tolerance 1e-6): ok"
        else
            print '(a, es9.2, a)', "npz route (" // trim(npz) // "): max |difference| ", worst, &
                " (tolerance 1e-6): FAILED"
            call net%free()
            stop 1
        end if
    end if
    call net%free()
contains
    subroutine usage(why)
        character(len=*), intent(in) :: why
        write (0, '(a)') "keras_import: " // why
        write (0, '(a)') usage_line
        stop 2
    end subroutine usage
end program keras_import
