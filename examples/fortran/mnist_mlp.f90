! mnist_mlp.f90 - R-MLP from Fortran: Dense(128, relu) - Dense(128, relu) -
! Dense(10, softmax) on MNIST or Fashion-MNIST (x/255, one-hot targets,
! categorical cross-entropy, SGD lr 0.01, batch 128), then save, load the file
! into a new model and predict with it.
!
!   mnist_mlp [data folder] [--epochs N] [--train N] [--out DIR]
!     data folder   the four idx files (.gz or not) or a Keras mnist.npz;
!                   default /usr/share/datasets/fashion-mnist
!     --epochs N    default 2 (the lecture ran 20)
!     --train N     use the first N training images (default all)
!     --out DIR     where the model file mnist_mlp_fortran.nnl goes (default:
!                   the program's folder, build/fortran/; never the current one)
program mnist_mlp
    use nnlite
    implicit none
    character(len=512) :: data, arg, file, outdir, prog
    integer :: epochs, ntrain, i, nargs, ntest, right, slash, ios
    type(nnl_model) :: model, loaded
    real(c_float), allocatable :: xtr(:, :, :), xte(:, :, :), ytr(:, :), p(:, :), p2(:, :)
    integer(c_int64_t), allocatable :: ltr(:), lte(:)
    real(c_double) :: res(2)

    data = "/usr/share/datasets/fashion-mnist"
    epochs = 2
    ntrain = -1
    ! output folder by default: the program's own (its path up to the last '/')
    call get_command_argument(0, prog)
    slash = index(prog, "/", back=.true.)
    outdir = "."
    if (slash > 1) outdir = prog(1:slash - 1)
    if (slash > 0) prog = prog(slash + 1:)
    nargs = command_argument_count()
    i = 1
    do while (i <= nargs)
        call get_command_argument(i, arg)
        if (arg == "--epochs" .or. arg == "--train" .or. arg == "--out") then
            if (i + 1 > nargs) call usage("option '" // trim(arg) // "' needs a value")
            call get_command_argument(i + 1, file)
            ios = 0
            if (arg == "--epochs") read (file, *, iostat=ios) epochs
            if (arg == "--train") read (file, *, iostat=ios) ntrain
            if (arg == "--out") outdir = file
            if (ios /= 0) call usage("option '" // trim(arg) // "' needs a whole number (got '" // trim(file) // "')")
            i = i + 2
        else if (arg(1:1) == "-") then
            call usage("unknown option '" // trim(arg) // "' (known: --epochs N, --train N, --out DIR)")
        else
            data = arg
            i = i + 1
        end if
    end do

    call nnl_load_mnist(trim(data), xtr, ltr, xte, lte)  ! x(28, 28, N), 0..255
    if (ntrain > 0 .and. ntrain < size(ltr)) then
        xtr = xtr(:, :, 1:ntrain)
        ltr = ltr(1:ntrain)
    end if
    xtr = xtr / 255
    xte = xte / 255
    ntest = size(lte)
    ! one-hot targets y(10, N)
    allocate (ytr(10, size(ltr)))
    ytr = 0
    do i = 1, size(ltr)
        ytr(ltr(i) + 1, i) = 1
    end do
    print '(a, i0, a, i0, a)', "data: ", size(ltr), " training and ", ntest, " test images from " // trim(data)

    call model%create(seed=1)
    call model%add("Flatten(input_shape=(28, 28))")
    call model%add("Dense(128, activation='relu')")
    call model%add("Dense(128, activation='relu')")
    call model%add("Dense(10, activation='softmax')")
    call model%compile("SGD(learning_rate=0.01)", "categorical_crossentropy", "accuracy")
    call model%summary()
    call model%fit(xtr, ytr, epochs=epochs, batch_size=128, verbose=2)

    call execute_command_line("mkdir -p '" // trim(outdir) // "'")
    file = trim(outdir) // "/mnist_mlp_fortran.nnl"
    call model%save(trim(file))
    call loaded%load(trim(file))
    allocate (p(10, ntest), p2(10, ntest))
    call model%predict(xte, p)
    call loaded%predict(xte, p2)
    right = 0
    do i = 1, ntest
        if (maxloc(p2(:, i), 1) - 1 == lte(i)) right = right + 1
    end do
    call loaded%compile("SGD(learning_rate=0.01)", "sparse_categorical_crossentropy", "accuracy")
    call loaded%evaluate(xte, lte, res)
    print '(a, a, l1)', "saved to " // trim(file) // ", loaded back; ", "same predictions: ", all(p == p2)
    print '(a, f0.4, a, f0.4)', "test loss: ", res(1), "  test accuracy: ", real(right, c_double) / ntest
    call model%free()
    call loaded%free()
    if (.not. all(p == p2)) error stop "the loaded model predicts differently"
contains
    subroutine usage(why)
        character(len=*), intent(in) :: why
        write (0, '(a)') trim(prog) // ": " // why
        write (0, '(a)') "usage: " // trim(prog) // " [data folder] [--epochs N (2)] [--train N] [--out DIR]"
        stop 2
    end subroutine usage
end program mnist_mlp
