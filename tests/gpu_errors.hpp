/* CUDA errors as nnlite statuses (nnlite.h "GPU", since 0.8): the mapping
   nnl_cuda::error_status class by class (pure, runs without a GPU), and on
   a GPU a sticky device fault provoked on purpose in a process of its own
   (it poisons that process's CUDA context): the failing call says
   NNL_ERR_DEVICE with CUDA's error, later GPU calls fail the same way, and
   nnl_set_device(m, "cpu") brings the model back with the weights of its
   last GPU call that succeeded. */
#include <sys/wait.h>
#include <unistd.h>

namespace ge {

/* cudaError_t values (driver_types.h; stable across CUDA versions): this
   file is plain C++ without CUDA's headers, as nnlite_cuda.h is */
constexpr int
    Success = 0, InvalidValue = 1, MemoryAllocation = 2, InitializationError = 3, InvalidConfiguration = 9,
    InvalidDevicePointer = 17, InsufficientDriver = 35, CallRequiresNewerDriver = 36, DevicesUnavailable = 46,
    InvalidDeviceFunction = 98, NoDevice = 100, InvalidDevice = 101, InvalidKernelImage = 200,
    NoKernelImageForDevice = 209, ECCUncorrectable = 214, InvalidPtx = 218, NvlinkUncorrectable = 220,
    UnsupportedPtxVersion = 222, InvalidResourceHandle = 400, IllegalAddress = 700, LaunchOutOfResources = 701,
    LaunchTimeout = 702, Assert = 710, HardwareStackError = 714, IllegalInstruction = 715, MisalignedAddress = 716,
    LaunchFailure = 719, SystemNotReady = 802, SystemDriverMismatch = 803, MpsConnectionFailed = 805,
    StreamCaptureInvalidated = 901, Unknown = 999;

static int status(int e, std::string *hint = nullptr) {
    const char *h = nullptr;
    int st = nnl_cuda::error_status(e, &h);
    if (hint) *hint = h ? h : "";
    return st;
}

} // namespace ge

TEST_CASE("no GPU needed: each class of CUDA error becomes its nnlite status") {
    CHECK(NNL_ERR_DEVICE == 11);
    CHECK(std::string(nnl_status_string(NNL_ERR_DEVICE)) == "NNL_ERR_DEVICE");
    std::string h;
    CHECK(ge::status(ge::Success, &h) == NNL_OK);
    CHECK(h.empty());
    CHECK(nnl_cuda::error_status(ge::Success, nullptr) == NNL_OK); /* hint may be NULL */
    /* out of device memory */
    CHECK(ge::status(ge::MemoryAllocation) == NNL_ERR_MEMORY);
    /* nnlite's own mistakes: bad arguments, pointers, handles, launch shapes */
    for (int e : {ge::InvalidValue, ge::InvalidConfiguration, ge::InvalidDevicePointer, ge::InvalidResourceHandle,
                  ge::LaunchOutOfResources, ge::StreamCaptureInvalidated}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_INTERNAL);
        CHECK(h.empty());
    }
    /* faults in a running kernel: the device's, the context lost */
    for (int e : {ge::IllegalAddress, ge::MisalignedAddress, ge::IllegalInstruction, ge::HardwareStackError,
                  ge::Assert, ge::LaunchFailure, ge::LaunchTimeout}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_DEVICE);
        CHECK(h.find("context is lost") != std::string::npos);
        CHECK(h.find("kernel") != std::string::npos);
    }
    /* the hardware failed */
    for (int e : {ge::ECCUncorrectable, ge::NvlinkUncorrectable, ge::Unknown}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_DEVICE);
        CHECK(h.find("GPU failed") != std::string::npos);
    }
    /* driver and runtime do not fit */
    for (int e : {ge::InsufficientDriver, ge::CallRequiresNewerDriver, ge::SystemDriverMismatch}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_DEVICE);
        CHECK(h.find("update the driver") != std::string::npos);
    }
    /* no code for this GPU in the build */
    for (int e : {ge::NoKernelImageForDevice, ge::InvalidKernelImage, ge::InvalidDeviceFunction, ge::InvalidPtx,
                  ge::UnsupportedPtxVersion}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_DEVICE);
        CHECK(h.find("CUDA_ARCH") != std::string::npos);
    }
    /* the device gone, busy, prohibited or not ready; MPS; codes CUDA adds later */
    for (int e : {ge::InitializationError, ge::DevicesUnavailable, ge::NoDevice, ge::InvalidDevice, ge::SystemNotReady,
                  ge::MpsConnectionFailed, 12345}) {
        CAPTURE(e);
        CHECK(ge::status(e, &h) == NNL_ERR_DEVICE);
    }
}

TEST_CASE("no GPU needed: without a driver nnl_set_device is NNL_ERR_UNSUPPORTED, not a device error") {
    char why[512];
    int st = nnl_cuda::device_count_error(why, sizeof why);
    CHECK((st == 0 || st == NNL_ERR_DEVICE));
    if (st == 0) CHECK(why[0] == 0);
    if (nnl_cuda_device_count() == 0 && st == 0) { /* no driver or no device: this machine has no GPU */
        nnl_model *m = gm::build({"Dense(3, input_shape=(4,))"}, "SGD()", "mse", "", 1);
        CHECK(nnl_set_device(m, "cuda") == NNL_ERR_UNSUPPORTED);
        nnl_model_free(m);
    }
}

/* Run by the case below in a child process (NNL_GPU_FAULT_CHILD=1): a no-op
   in the suite's own process. */
TEST_CASE("GPU fault child: a sticky device error, then the CPU") {
    if (!getenv("NNL_GPU_FAULT_CHILD")) return;
    nnl_model *m = gm::build({"Dense(16, activation='relu', input_shape=(8,))", "Dense(3, activation='softmax')"},
                             "Adam(0.01)", "sparse_categorical_crossentropy", "accuracy", 5);
    std::vector<float> x(64 * 8);
    std::vector<int32_t> y(64);
    nnl::Rng r(3);
    for (auto &v : x) v = (float)r.normal();
    for (size_t i = 0; i < y.size(); i++) y[i] = (int32_t)(i % 3);
    int64_t per[1] = {8};
    REQUIRE_MESSAGE(nnl_set_device(m, "cuda:0") == NNL_OK, gm::err());
    gm::fit(m, x, y, 1, per, 1, 16); /* a GPU call that succeeds: the host copy is its weights */
    const std::vector<float> good = gm::weights(m);

    /* the fault: a kernel reads an unmapped device address (sticky: the
       process's context on this device is lost) */
    nnl_cuda::context_use(m->gpu->ctx);
    float *dst = (float *)nnl_cuda::dev_alloc(1024 * sizeof(float));
    int raised = 0;
    std::string msg;
    try {
        nnl_cuda::copy((const float *)(uintptr_t)0x1000, dst, 1024);
        nnl_cuda::synchronize();
    } catch (const nnl::Error &e) {
        raised = e.status;
        msg = e.msg;
    }
    nnl_cuda::context_use(nullptr);
    INFO("the fault: " << msg);
    CHECK(raised == NNL_ERR_DEVICE);
    CHECK(msg.rfind("CUDA error cuda", 0) == 0);
    printf("provoked device fault: %s\n", msg.c_str());

    /* the next GPU call fails with NNL_ERR_DEVICE and CUDA's error, naming the call */
    int64_t xs[2] = {64, 8}, ys[1] = {64};
    nnl_fit_options o;
    nnl_fit_options_init(&o);
    o.epochs = 1;
    o.batch_size = 16;
    o.verbose = 0;
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_ERR_DEVICE);
    CHECK(gm::err().rfind("nnl_fit: CUDA error cuda", 0) == 0);
    std::vector<float> p(64 * 3);
    CHECK(nnl_predict(m, x.data(), 2, xs, 16, p.data(), (int64_t)p.size()) == NNL_ERR_DEVICE);
    CHECK(gm::err().rfind("nnl_predict: CUDA error cuda", 0) == 0);

    /* back to the CPU: the weights of the last GPU call that succeeded */
    CHECK(nnl_set_device(m, "cpu") == NNL_OK);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    CHECK(gm::weights(m) == good);
    CHECK(nnl_predict(m, x.data(), 2, xs, 16, p.data(), (int64_t)p.size()) == NNL_OK);
    for (float v : p) CHECK(std::isfinite(v));
    CHECK(nnl_fit(m, x.data(), 2, xs, y.data(), NNL_INT32, 1, ys, &o) == NNL_OK);

    /* the device stays lost for this process: a new placement fails alike
       and leaves the model on the CPU */
    CHECK(nnl_set_device(m, "cuda:0") == NNL_ERR_DEVICE);
    CHECK(gm::err().find("CUDA error cuda") != std::string::npos);
    CHECK(std::string(nnl_get_device(m)) == "cpu");
    nnl_model_free(m);
}

TEST_CASE("a device fault is NNL_ERR_DEVICE and the model continues on the CPU (in a child process)") {
    if (getenv("NNL_GPU_FAULT_CHILD")) return; /* the child itself */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    REQUIRE(len > 0);
    self[len] = 0;
    std::string cmd = std::string("NNL_GPU_FAULT_CHILD=1 '") + self + "' '--test-case=GPU fault child*' 2>&1";
    FILE *f = popen(cmd.c_str(), "r");
    REQUIRE(f);
    std::string out;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, got);
    int rc = pclose(f);
    INFO("child: " << cmd << "\n" << out);
    CHECK((WIFEXITED(rc) && WEXITSTATUS(rc) == 0));
    CHECK(out.find("provoked device fault: CUDA error cuda") != std::string::npos);
    CHECK(out.find("Status: SUCCESS!") != std::string::npos);
}
