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
!   keras_import [model.keras or model.h5]
program keras_import
    use nnlite
    implicit none
    type(nnl_model) :: net
    character(len=4096) :: path, arg
    real(c_float) :: x(6, 3), p(3, 3)
    integer :: i, j, nargs

    call get_command_argument(0, arg)
    i = index(arg, "/", back=.true.)
    path = arg(1:i) // "../../tests/reference/keras/mlp.keras"
    nargs = command_argument_count()
    do i = 1, nargs
        call get_command_argument(i, arg)
        if (arg == "-h" .or. arg == "--help") then
            print '(a)', "usage: keras_import [model.keras or model.h5]"
            stop
        else if (arg(1:1) == "-") then
            call usage("unknown option '" // trim(arg) // "'")
        else if (i > 1) then
            call usage("unexpected argument '" // trim(arg) // "' (one model path)")
        else
            path = arg
        end if
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
    call net%free()
contains
    subroutine usage(why)
        character(len=*), intent(in) :: why
        write (0, '(a)') "keras_import: " // why
        write (0, '(a)') "usage: keras_import [model.keras or model.h5]"
        stop 2
    end subroutine usage
end program keras_import
