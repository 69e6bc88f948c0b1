/* Step-by-step optimizer tests: every optimizer's first three updates against
   expected weights written here as literals. Included by unit.cpp after
   nnlite.cpp and doctest, so it drives nnl::make_optimizer / nnl::Optimizer
   directly.

   The problem: two weight tensors, w1 (3 floats) and w2 (2 floats), start at
   OPT_W0; before every step the gradient is g = 2 * w + OPT_C computed from
   the current weights (the gradient of sum((w + C/2)^2)), so the gradients
   change with the weights as in real training.

   Where the numbers come from: tests/reference/optimizers_reference.py
   (run it with /usr/bin/python3; needs numpy, optionally torch) prints every
   block below. It computes them twice:
     - "Keras formulas": an independent float64 numpy implementation of the
       Keras 3 update rules (keras/src/optimizers, same as tf.keras >= 2.11).
       The literals are these values.
     - "PyTorch": torch.optim (torch 1.13, Debian python3-torch) in float64,
       only where PyTorch's rule is the same as Keras' once the options are
       set to match. Where the only difference is where epsilon enters the
       denominator, the script runs both sides with epsilon = 0 (the rest of
       the rule then agrees to 1e-16) and the epsilon term itself is checked
       against the Keras formulas only. Each block says which.
   Tolerance: nnlite computes in float32; Approx(x).epsilon(1e-6) accepts
   |w - x| < 1e-6 * (1 + max(|w|, |x|)) (doctest's default scale is 1), about
   15 float32 ulps for |w| ~ 1, while every optimizer moves each weight by
   1e-3 or more per step. */

static const float OPT_W0[5] = {0.5f, -1.2f, 2.0f, 0.3f, -0.7f}; /* w1[0..2], w2[0..1] */
static const float OPT_C[5] = {0.1f, -0.3f, 0.2f, -0.5f, 0.4f};

/* Builds `spec`, checks its parsed learning rate, runs three steps on the
   problem above and compares all five weights after each step. */
static void check_optimizer_steps(const char *spec, double lr, const double (&expect)[3][5]) {
    INFO("optimizer " << std::string(spec)); /* a bare const char * would print as a pointer */
    std::unique_ptr<nnl::Optimizer> opt = nnl::make_optimizer(spec);
    REQUIRE(opt != nullptr);
    CHECK(opt->learning_rate == doctest::Approx(lr));
    CHECK(opt->iterations == 0);
    float w1[3], w2[2], g1[3], g2[2]; /* separate arrays: slices need not be contiguous */
    for (int i = 0; i < 3; i++) w1[i] = OPT_W0[i];
    for (int i = 0; i < 2; i++) w2[i] = OPT_W0[3 + i];
    nnl::ParamSlice p[2] = {{w1, g1, 3}, {w2, g2, 2}};
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 3; i++) g1[i] = 2.0f * w1[i] + OPT_C[i];
        for (int i = 0; i < 2; i++) g2[i] = 2.0f * w2[i] + OPT_C[3 + i];
        opt->apply(p, 2);
        CHECK(opt->iterations == step + 1);
        CHECK(opt->learning_rate == doctest::Approx(lr)); /* legacy decay leaves the base rate alone */
        const float got[5] = {w1[0], w1[1], w1[2], w2[0], w2[1]};
        for (int i = 0; i < 5; i++) {
            INFO("after step " << step + 1 << ", weight " << i << " (w" << (i < 3 ? 1 : 2) << "["
                               << (i < 3 ? i : i - 3) << "])");
            CHECK(got[i] == doctest::Approx(expect[step][i]).epsilon(1e-6));
        }
    }
}

/* Status of the nnl::Error make_optimizer throws (NNL_OK if none); msg gets its message. */
static int optimizer_error(const char *spec, std::string *msg = nullptr) {
    try {
        nnl::make_optimizer(spec);
    } catch (const nnl::Error &e) {
        if (msg) *msg = e.msg;
        return e.status;
    }
    return NNL_OK;
}

/* ---- SGD ---------------------------------------------------------------- */

TEST_CASE("optimizer steps: SGD") {
    /* Keras formulas (w -= lr * g), tests/reference/optimizers_reference.py.
       PyTorch: torch.optim.SGD(lr=0.1) agrees (max diff 2e-16). */
    static const double expect[3][5] = {
        {0.39, -0.93, 1.58, 0.29, -0.6},
        {0.302, -0.714, 1.244, 0.282, -0.52},
        {0.2316, -0.5412, 0.9752, 0.2756, -0.456}};
    check_optimizer_steps("SGD(learning_rate=0.1)", 0.1, expect);
}

TEST_CASE("optimizer steps: SGD momentum") {
    /* Keras formulas (v = m*v - lr*g; w += v), optimizers_reference.py.
       PyTorch: torch.optim.SGD(lr=0.1, momentum=0.9) agrees (2e-16): its
       buf = m*buf + g, w -= lr*buf is Keras' rule with v = -lr*buf while lr
       is constant. */
    static const double expect[3][5] = {
        {0.39, -0.93, 1.58, 0.29, -0.6},
        {0.203, -0.471, 0.866, 0.273, -0.43},
        {-0.0159, 0.0663, 0.0302, 0.2531, -0.231}};
    check_optimizer_steps("SGD(learning_rate=0.1, momentum=0.9)", 0.1, expect);
}

TEST_CASE("optimizer steps: SGD nesterov (keyword and positional arguments)") {
    /* Keras formulas (v = m*v - lr*g; w += m*v - lr*g), optimizers_reference.py.
       PyTorch: torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True) agrees
       (1e-16): w -= lr*(g + m*buf) is the same rule for constant lr. */
    static const double expect[3][5] = {
        {0.291, -0.687, 1.202, 0.281, -0.51},
        {0.07232, -0.15024, 0.36704, 0.26112, -0.3112},
        {-0.1095936, 0.2962752, -0.3275392, 0.2445824, -0.145824}};
    check_optimizer_steps("SGD(learning_rate=0.1, momentum=0.9, nesterov=True)", 0.1, expect);
    /* Keras' positional order: SGD(learning_rate, momentum, nesterov) */
    check_optimizer_steps("SGD(0.1, 0.9, True)", 0.1, expect);
}

TEST_CASE("optimizer steps: SGD legacy decay") {
    /* Keras formulas with lr_t = 0.1 / (1 + 0.5 * iterations), iterations
       counted before the step (0.1, 0.0667, 0.05), optimizers_reference.py.
       PyTorch: torch.optim.SGD with the group's lr set to lr_t before each
       step agrees (2e-16). */
    static const double expect[3][5] = {
        {0.39, -0.93, 1.58, 0.29, -0.6},
        {0.3313333333, -0.786, 1.356, 0.2846666667, -0.5466666667},
        {0.2932, -0.6924, 1.2104, 0.2812, -0.512}};
    check_optimizer_steps("SGD(learning_rate=0.1, decay=0.5)", 0.1, expect);
}

TEST_CASE("optimizer steps: SGD momentum with legacy decay") {
    /* Keras formulas only (optimizers_reference.py): Keras' velocity carries
       the decayed lr (v = m*v - lr_t*g) while PyTorch's buffer does not, so
       with a changing lr no torch.optim.SGD setting has the same rule. */
    static const double expect[3][5] = {
        {0.39, -0.93, 1.58, 0.29, -0.6},
        {0.2763333333, -0.651, 1.146, 0.2796666667, -0.4966666667},
        {0.1868666667, -0.4314, 0.8044, 0.2715333333, -0.4153333333}};
    check_optimizer_steps("SGD(learning_rate=0.1, momentum=0.5, decay=0.5)", 0.1, expect);
}

/* ---- RMSprop, Adagrad, Adadelta ----------------------------------------- */

TEST_CASE("optimizer steps: RMSprop defaults") {
    /* Keras formulas (lr 0.001, rho 0.9, eps 1e-7 inside the sqrt),
       optimizers_reference.py. PyTorch: torch.optim.RMSprop(lr=0.001,
       alpha=0.9) puts eps outside the sqrt; with eps=0 on both sides the rule
       agrees exactly (here eps moves the weights by only 2.5e-7). */
    static const double expect[3][5] = {
        {0.4968377236, -1.196837723, 1.996837722, 0.2968378804, -0.6968377239},
        {0.4945498434, -1.194546116, 1.994545203, 0.2946160629, -0.6945504746},
        {0.4926373025, -1.192628582, 1.992626449, 0.2927931382, -0.6926387796}};
    check_optimizer_steps("RMSprop", 0.001, expect);
}

TEST_CASE("optimizer steps: RMSprop centered with momentum") {
    /* Keras formulas (a = rho*a + (1-rho)*g; inc = lr*g/sqrt(v - a^2 + eps);
       mom = m*mom + inc; w -= mom), optimizers_reference.py.
       PyTorch: torch.optim.RMSprop(lr=0.01, alpha=0.8, momentum=0.5,
       centered=True) agrees exactly with eps=0 on both sides (its buf times lr
       is Keras' momentum slot for constant lr). eps=1e-4 inside the sqrt, as
       Keras has it, moves the weights by up to 1.2e-3: Keras formulas only. */
    static const double expect[3][5] = {
        {0.4750064541, -1.175001072, 1.975000443, 0.2757464375, -0.6750078088},
        {0.4421204056, -1.141843539, 1.941779125, 0.2504924645, -0.6421694542},
        {0.406716272, -1.105662366, 1.905418598, 0.2375977586, -0.6069040456}};
    check_optimizer_steps("RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-4, centered=True)", 0.01,
                          expect);
}

TEST_CASE("optimizer steps: Adagrad") {
    /* Keras formulas (acc starts at 0.1; acc += g^2; w -= lr*g/sqrt(acc+eps)),
       optimizers_reference.py. PyTorch: torch.optim.Adagrad(lr=0.1,
       initial_accumulator_value=0.1) agrees exactly with eps=0 on both sides
       (PyTorch adds eps outside the sqrt). */
    static const double expect[3][5] = {
        {0.4038925574, -1.100678895, 1.900282248, 0.2698488792, -0.6046537454},
        {0.3417515445, -1.032967689, 1.831413898, 0.2579643887, -0.5435626892},
        {0.294486919, -0.9790352296, 1.776041578, 0.2532011342, -0.4975196291}};
    check_optimizer_steps("Adagrad(learning_rate=0.1)", 0.1, expect);
}

TEST_CASE("optimizer steps: Adagrad initial accumulator and epsilon") {
    /* Keras formulas, optimizers_reference.py. PyTorch:
       torch.optim.Adagrad(lr=0.2, initial_accumulator_value=0.5) agrees
       exactly with eps=0; eps=0.01 inside the sqrt (moves the weights by up
       to 6.8e-4) is checked against the Keras formulas only. */
    static const double expect[3][5] = {
        {0.3322515726, -1.006648984, 1.802829939, 0.2722649902, -0.5372423082},
        {0.2315296034, -0.8790707913, 1.669591004, 0.2599380765, -0.4410083037},
        {0.1619776922, -0.7803544068, 1.564258738, 0.2544379853, -0.3759728263}};
    check_optimizer_steps("Adagrad(learning_rate=0.2, initial_accumulator_value=0.5, epsilon=0.01)", 0.2, expect);
}

TEST_CASE("optimizer steps: Adadelta") {
    /* Keras formulas (rho 0.95, eps 1e-7; lr 1.0 so the steps are visible),
       optimizers_reference.py. PyTorch: torch.optim.Adadelta(lr=1.0,
       rho=0.95, eps=1e-7) has the same rule with eps in the same places and
       agrees exactly. */
    static const double expect[3][5] = {
        {0.4985857876, -1.198585787, 1.998585787, 0.2985859278, -0.6985857879},
        {0.4971553567, -1.197154289, 1.997154027, 0.2971740123, -0.6971555374},
        {0.4957151922, -1.195711602, 1.995710722, 0.295777518, -0.6957157992}};
    check_optimizer_steps("Adadelta(learning_rate=1.0)", 1.0, expect);
}

/* ---- Adam family -------------------------------------------------------- */

TEST_CASE("optimizer steps: Adam defaults") {
    /* Keras formulas (alpha = lr*sqrt(1-b2^t)/(1-b1^t); w -= alpha*m/(sqrt(v)+eps)),
       optimizers_reference.py. PyTorch: torch.optim.Adam(lr=0.001) divides by
       sqrt(v)/sqrt(1-b2^t) + eps instead; with eps=0 on both sides the rule
       agrees exactly (here eps moves the weights by only 7e-8). */
    static const double expect[3][5] = {
        {0.4990000029, -1.199000001, 1.999000001, 0.2990000316, -0.6990000032},
        {0.4980000528, -1.198000021, 1.998000014, 0.2980006317, -0.6980000581},
        {0.497000182, -1.197000074, 1.997000047, 0.2970022057, -0.6970002004}};
    check_optimizer_steps("Adam", 0.001, expect);
}

TEST_CASE("optimizer steps: Adam beta_1 and epsilon") {
    /* Keras formulas, optimizers_reference.py. PyTorch:
       torch.optim.Adam(lr=0.01, betas=(0.8, 0.999)) agrees exactly with eps=0.
       eps=1e-3 added to sqrt(v) without bias correction, as Keras does, moves
       the weights by up to 5.8e-3: Keras formulas only. */
    static const double expect[3][5] = {
        {0.4902794463, -1.190115766, 1.99007473, 0.2924025307, -0.6903065343},
        {0.4804905107, -1.18020232, 1.980130459, 0.2844462488, -0.6805384446},
        {0.4706838866, -1.170280967, 1.970180994, 0.2765182721, -0.67075121}};
    check_optimizer_steps("Adam(learning_rate=0.01, beta_1=0.8, epsilon=1e-3)", 0.01, expect);
}

TEST_CASE("optimizer steps: Adam amsgrad") {
    /* Keras formulas (vh = max(vh, v) in place of v), optimizers_reference.py;
       beta_2=0.5 and lr=0.3 make v shrink so that amsgrad changes the weights
       (by up to 0.14 against plain Adam). PyTorch: torch.optim.Adam(lr=0.3,
       betas=(0.9, 0.5), amsgrad=True) agrees exactly with eps=0. */
    static const double expect[3][5] = {
        {0.2000000386, -0.9000000157, 1.70000001, 4.242634688e-07, -0.4000000424},
        {-0.06194298319, -0.5913411963, 1.394197748, 0.1570102212, -0.1486050617},
        {-0.2372913185, -0.304469187, 1.092003524, 0.3179553689, 0.007681232756}};
    check_optimizer_steps("Adam(learning_rate=0.3, beta_2=0.5, amsgrad=True)", 0.3, expect);
}

TEST_CASE("optimizer steps: AdamW") {
    /* Keras formulas (w -= w*weight_decay*lr, then Adam),
       optimizers_reference.py. PyTorch: torch.optim.AdamW(lr=0.01,
       weight_decay=0.1, betas=(0.8, 0.999)) (w *= 1 - lr*wd, then Adam)
       agrees exactly with eps=0 on both sides (Adam's eps placement). */
    static const double expect[3][5] = {
        {0.4895000287, -1.188800012, 1.988000008, 0.2897003162, -0.6893000316},
        {0.4790216732, -1.177615914, 1.976015223, 0.2796023285, -0.6786233017},
        {0.4685724793, -1.166450816, 1.964047758, 0.2699039018, -0.6679783641}};
    check_optimizer_steps("AdamW(learning_rate=0.01, weight_decay=0.1, beta_1=0.8)", 0.01, expect);
}

TEST_CASE("optimizer steps: AdamW default weight decay") {
    /* Keras formulas with weight_decay 0.004, optimizers_reference.py.
       PyTorch: torch.optim.AdamW(lr=0.05, weight_decay=0.004) agrees exactly
       with eps=0 on both sides. */
    static const double expect[3][5] = {
        {0.4499001437, -1.149760059, 1.949600038, 0.2499415811, -0.6498601581},
        {0.3999913457, -1.099588546, 1.899245489, 0.2164332549, -0.5999372261},
        {0.3504234826, -1.049527565, 1.848961054, 0.2127381782, -0.5504067152}};
    check_optimizer_steps("AdamW(learning_rate=0.05)", 0.05, expect);
}

TEST_CASE("optimizer steps: Adamax") {
    /* Keras formulas (u = max(b2*u, |g|); w -= lr/(1-b1^t) * m/(u+eps)),
       optimizers_reference.py; max picks b2*u for some weights at steps 2-3.
       PyTorch: torch.optim.Adamax(lr=0.1) uses max(b2*u, |g|+eps) and divides
       by u; with eps=0 on both sides it agrees exactly. */
    static const double expect[3][5] = {
        {0.4000000091, -1.100000004, 1.900000002, 0.2000001, -0.60000001},
        {0.3094788733, -1.003802445, 1.802408679, 0.2052631579, -0.5104367705},
        {0.2281368831, -0.9114406285, 1.707271944, 0.2416366541, -0.4309097759}};
    check_optimizer_steps("Adamax(learning_rate=0.1)", 0.1, expect);
}

/* Nadam follows Keras 3 (and tf.keras >= 2.11): u_t = b1*(1 - 0.5*0.96^t).
   The older tf.keras <= 2.10 Nadam and PyTorch's default use 0.96^(0.004 t),
   which gives different weights (about 6e-5 off at step 1 here);
   optimizers_reference.py prints those too, marked NOT Keras 3. */
TEST_CASE("optimizer steps: Nadam") {
    /* Keras formulas, optimizers_reference.py. PyTorch:
       torch.optim.NAdam(lr=0.01, eps=1e-7, momentum_decay=1.0, foreach=True)
       has the same rule (its mu_t = b1*(1-0.5*0.96^(t*momentum_decay)), eps
       added to sqrt(v_hat) as in Keras) and agrees (2e-16). (foreach=True:
       torch 1.13's single-tensor NAdam multiplies mu into mu_product_next
       twice.) */
    static const double expect[3][5] = {
        {0.4893721229, -1.189372122, 1.989372122, 0.2893721326, -0.689372123},
        {0.4817020687, -1.181662802, 1.981653269, 0.2824830518, -0.681708765},
        {0.47468114, -1.17458666, 1.974563768, 0.2766090649, -0.6746972826}};
    check_optimizer_steps("Nadam(learning_rate=0.01)", 0.01, expect);
}

TEST_CASE("optimizer steps: Nadam betas and epsilon") {
    /* Keras formulas, optimizers_reference.py. PyTorch:
       torch.optim.NAdam(lr=0.02, betas=(0.8, 0.99), eps=1e-3,
       momentum_decay=1.0, foreach=True) agrees (2e-16). */
    static const double expect[3][5] = {
        {0.4779173013, -1.177905409, 1.977902487, 0.2781160655, -0.6779193068},
        {0.4608754626, -1.160677911, 1.960630405, 0.2653917052, -0.6609094543},
        {0.4446393337, -1.144158699, 1.9440438, 0.2561952576, -0.644722483}};
    check_optimizer_steps("Nadam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3)", 0.02, expect);
}

/* ---- Gradient clipping (SGD, gradients big enough to be clipped) -------- */

TEST_CASE("optimizer steps: clipnorm (per tensor)") {
    /* Keras formulas (g *= c / max(||g||, c) per tensor): ||g1|| = 5.1, 4.7,
       4.3 is clipped to 2, ||g2|| = 1.0, 0.80, 0.64 is not (so w2 moves as in
       plain SGD), optimizers_reference.py. PyTorch:
       torch.nn.utils.clip_grad_norm_ on each tensor then SGD agrees only to
       1.1e-7, not exactly: it divides by (norm + 1e-6). */
    static const double expect[3][5] = {
        {0.4569701443, -1.094381263, 1.835704188, 0.29, -0.6},
        {0.4139402887, -0.9887625268, 1.671408375, 0.282, -0.52},
        {0.370910433, -0.8831437902, 1.507112563, 0.2756, -0.456}};
    check_optimizer_steps("SGD(learning_rate=0.1, clipnorm=2.0)", 0.1, expect);
}

TEST_CASE("optimizer steps: clipvalue") {
    /* Keras formulas (g clipped to [-1.5, 1.5]; g1[1] and g1[2] are clipped at
       every step, the others never), optimizers_reference.py. PyTorch:
       torch.nn.utils.clip_grad_value_(1.5) then SGD agrees (2e-16). */
    static const double expect[3][5] = {
        {0.39, -1.05, 1.85, 0.29, -0.6},
        {0.302, -0.9, 1.7, 0.282, -0.52},
        {0.2316, -0.75, 1.55, 0.2756, -0.456}};
    check_optimizer_steps("SGD(learning_rate=0.1, clipvalue=1.5)", 0.1, expect);
}

TEST_CASE("optimizer steps: global_clipnorm") {
    /* Keras formulas (all g *= c / max(global norm, c)): global norm 5.2,
       4.6, 4.0 is clipped to 3, which also scales the small g2,
       optimizers_reference.py. PyTorch: torch.nn.utils.clip_grad_norm_ over
       both tensors then SGD agrees only to 1.6e-7, not exactly: it divides by
       (norm + 1e-6). */
    static const double expect[3][5] = {
        {0.4366671513, -1.044546644, 1.758183669, 0.2942424683, -0.642424683},
        {0.3733343026, -0.8890932882, 1.516367337, 0.2884849366, -0.584849366},
        {0.3100014539, -0.7336399323, 1.274551006, 0.2827274049, -0.527274049}};
    check_optimizer_steps("SGD(learning_rate=0.1, global_clipnorm=3.0)", 0.1, expect);
}

/* ---- Parsing: defaults and errors --------------------------------------- */

TEST_CASE("make_optimizer: default learning rates") {
    /* Keras 3 defaults, as documented in nnlite.h */
    CHECK(nnl::make_optimizer("adam")->learning_rate == doctest::Approx(0.001));
    CHECK(nnl::make_optimizer("Adam")->learning_rate == doctest::Approx(0.001));
    CHECK(nnl::make_optimizer("sgd")->learning_rate == doctest::Approx(0.01));
    for (const char *name : {"RMSprop", "Adagrad", "Adadelta", "AdamW", "Adamax", "Nadam"}) {
        INFO(std::string(name));
        std::unique_ptr<nnl::Optimizer> o = nnl::make_optimizer(name);
        CHECK(o->learning_rate == doctest::Approx(0.001));
        CHECK(o->iterations == 0);
    }
}

TEST_CASE("make_optimizer: unknown names are NNL_ERR_ARGUMENT") {
    std::string msg;
    CHECK(optimizer_error("Adamz", &msg) == NNL_ERR_ARGUMENT);
    CHECK(msg.find("Adamz") != std::string::npos);
    CHECK(optimizer_error("Adam(learning_rat=0.01)", &msg) == NNL_ERR_ARGUMENT);
    CHECK(msg.find("learning_rat") != std::string::npos);
    CHECK(optimizer_error("SGD(learning_rate=0.1, nesterof=True)") == NNL_ERR_ARGUMENT);
    CHECK(optimizer_error("Adamax(amsgrad=True)") == NNL_ERR_ARGUMENT); /* Adam's option, not Adamax's */
    CHECK(optimizer_error("Adam(learning_rate=0.01)") == NNL_OK);
}
