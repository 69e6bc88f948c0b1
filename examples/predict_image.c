/* predict_image.c - a handwritten digit from a photo or a drawing, through a
   model trained on MNIST (K-CNN or R-LENET saved by save_load.c or by you with
   nnl_save_model; any model whose input is 28 x 28 values: (28, 28),
   (28, 28, 1) or (784,)). Prints the class probabilities.

   The image (PNG, JPEG, BMP, GIF, TGA, PNM; any size; light or dark
   background) is brought into MNIST's own form (LeCun et al.: "the images
   were size normalized to fit in a 20x20 pixel box while preserving their
   aspect ratio ... centered in a 28x28 image by computing the center of
   mass of the pixels"):
     1. read as grayscale 0..255 (nnl_load_image, channels 1);
     2. invert when the background is light (the border's mean above 127):
        MNIST digits are white on black; then stretch the levels so that
        the paper (the border's mean) is 0 and the brightest ink 255;
     3. crop to the bounding box of the pixels above a tenth of the
        brightest (the stroke, not the paper's noise);
     4. scale it, keeping its aspect ratio, so its longer side is 20 pixels
        (area averaging: each output pixel the mean of the source it
        covers, which anti-aliases as MNIST's resampling did);
     5. paste it into a black 28 x 28 image so that its centre of mass falls
        on the image's centre (14, 14);
     6. scale to [0, 1] (as keras_cnn, lenet, mnist_mlp train; --raw keeps
        0..255), or with --normalize as K-MLP (keras_mlp, save_load) does:
        nnl_normalize(x, axis=1), Keras' utils.normalize of each column.

   usage: predict_image MODEL IMAGE [--raw | --normalize] [--save-input PNG]
   e.g.   build/save_load /path/to/mnist --out /tmp/m
          build/predict_image /tmp/m/kmlp.nnl digit.png --normalize
   (save_load trains K-MLP on Fashion-MNIST unless given MNIST; a K-CNN or
   R-LENET model is one nnl_save_model call after keras_cnn's or lenet's
   fit.) --save-input writes the 28 x 28 image the model sees
   (nnl_save_image), before --normalize. */
#include "common.h"

#include <math.h>

static void usage(FILE *f) {
    fprintf(f, "usage: predict_image MODEL IMAGE [--raw | --normalize] [--save-input PNG]\n"
               "  MODEL  a model file (nnl_save_model) taking 28 x 28 inputs, e.g. save_load's kmlp.nnl\n"
               "  IMAGE  a digit: PNG, JPEG, BMP, GIF, TGA or PNM, any size, light or dark background\n"
               "  --raw  feed 0..255 instead of [0, 1]\n"
               "  --normalize  feed nnl_normalize(x, axis=1), as K-MLP (save_load's kmlp.nnl) trains\n"
               "  --save-input PNG  also write the 28 x 28 image the model sees\n");
}

/* src (h x w) resampled to dst (oh x ow) by area: output pixel (i, j) is the
   mean of the source rectangle it covers, each source pixel weighted by its
   overlap (shrinking averages, enlarging repeats). */
static void area_resize(const float *src, int h, int w, float *dst, int oh, int ow) {
    double sy = (double)h / oh, sx = (double)w / ow;
    int i, j, y, x;
    for (i = 0; i < oh; i++)
        for (j = 0; j < ow; j++) {
            double y0 = i * sy, y1 = (i + 1) * sy, x0 = j * sx, x1 = (j + 1) * sx, sum = 0;
            for (y = (int)y0; y < h && y < y1; y++) {
                double wy = fmin(y1, y + 1.0) - fmax(y0, (double)y);
                for (x = (int)x0; x < w && x < x1; x++) {
                    double wx = fmin(x1, x + 1.0) - fmax(x0, (double)x);
                    if (wy > 0 && wx > 0) sum += wy * wx * src[(size_t)y * w + x];
                }
            }
            dst[i * ow + j] = (float)(sum / (sy * sx));
        }
}

/* MNIST's preprocessing of a grayscale image g (H x W, 0..255; changed in
   place) into out[28 * 28]. */
static void mnist_form(float *g, int H, int W, float *out) {
    double border = 0, peak = 0, cy = 0, cx = 0, mass = 0;
    int nb = 0, top = H, bottom = -1, left = W, right = -1, h, w, fh, fw, y, x, oy, ox;
    float box[20 * 20], *crop;
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++)
            if (y == 0 || x == 0 || y == H - 1 || x == W - 1) border += g[(size_t)y * W + x], nb++;
    border /= nb;
    if (border > 127) { /* dark ink on light paper: invert */
        for (y = 0; y < H * W; y++) g[y] = 255 - g[y];
        border = 255 - border;
    }
    /* the paper's level to 0, the brightest ink to 255 (MNIST's range) */
    for (y = 0; y < H * W; y++) peak = fmax(peak, g[y]);
    for (y = 0; y < H * W; y++) g[y] = peak > border ? (float)fmax(0, (g[y] - border) * 255 / (peak - border)) : 0;
    peak = peak > border ? 255 : 0;
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++)
            if (peak > 0 && g[(size_t)y * W + x] > 0.1 * peak) {
                if (y < top) top = y;
                if (y > bottom) bottom = y;
                if (x < left) left = x;
                if (x > right) right = x;
            }
    memset(out, 0, 28 * 28 * sizeof *out);
    if (bottom < 0) return; /* a blank image stays black */
    h = bottom - top + 1, w = right - left + 1;
    crop = malloc((size_t)h * w * sizeof *crop);
    if (!crop) {
        fprintf(stderr, "predict_image: out of memory\n");
        exit(1);
    }
    for (y = 0; y < h; y++) memcpy(crop + (size_t)y * w, g + (size_t)(top + y) * W + left, (size_t)w * sizeof *crop);
    /* the longer side to 20 pixels, the other in proportion (at least 1) */
    fh = h >= w ? 20 : (int)fmax(1, floor(20.0 * h / w + 0.5));
    fw = w >= h ? 20 : (int)fmax(1, floor(20.0 * w / h + 0.5));
    area_resize(crop, h, w, box, fh, fw);
    free(crop);
    /* centre of mass (pixel centres at i + 0.5) moved to (14, 14) */
    for (y = 0; y < fh; y++)
        for (x = 0; x < fw; x++) {
            double v = box[y * fw + x];
            mass += v, cy += v * (y + 0.5), cx += v * (x + 0.5);
        }
    oy = (int)floor(14 - cy / mass + 0.5), ox = (int)floor(14 - cx / mass + 0.5);
    for (y = 0; y < fh; y++)
        for (x = 0; x < fw; x++)
            if (oy + y >= 0 && oy + y < 28 && ox + x >= 0 && ox + x < 28) out[(oy + y) * 28 + ox + x] = box[y * fw + x];
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *image_path = NULL, *save_input = NULL;
    int raw = 0, normalize = 0, i, rank, in_rank, best = 0;
    int64_t in_shape[NNL_MAX_RANK], x_shape[NNL_MAX_RANK + 1], out_shape[NNL_MAX_RANK], per = 1, classes = 1;
    nnl_model *m;
    nnl_array *img;
    float x[28 * 28], *p;
    double sum = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--raw")) {
            raw = 1;
        } else if (!strcmp(argv[i], "--normalize")) {
            normalize = 1;
        } else if (!strcmp(argv[i], "--save-input") && i + 1 < argc) {
            save_input = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "predict_image: unknown option '%s' (known: --raw, --normalize, --save-input PNG)\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!model_path) {
            model_path = argv[i];
        } else if (!image_path) {
            image_path = argv[i];
        } else {
            fprintf(stderr, "predict_image: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!image_path) {
        usage(stderr);
        return 2;
    }
    CHECK(nnl_load_model(model_path, &m));
    in_rank = nnl_input_shape(m, in_shape);
    for (i = 0; i < in_rank; i++) per *= in_shape[i];
    if (in_rank < 1 || per != 28 * 28) {
        fprintf(stderr, "predict_image: the model's input holds %lld values per sample, not 28 x 28\n", (long long)per);
        return 1;
    }
    CHECK(nnl_load_image(image_path, 1, 0, 0, 1.0f, &img));
    mnist_form((float *)nnl_array_data(img), (int)nnl_array_dim(img, 0), (int)nnl_array_dim(img, 1), x);
    nnl_array_free(img);
    if (!raw)
        for (i = 0; i < 28 * 28; i++) x[i] /= 255;
    if (save_input) CHECK(nnl_save_image(save_input, x, 28, 28, 1, raw ? 1.0f : 255.0f));
    if (normalize) {
        int64_t shape[3] = {1, 28, 28};
        CHECK(nnl_normalize(x, 3, shape, 1));
    }

    /* one sample of the model's input shape: (1, 28, 28), (1, 28, 28, 1) or (1, 784) */
    x_shape[0] = 1;
    for (i = 0; i < in_rank; i++) x_shape[i + 1] = in_shape[i];
    rank = nnl_output_shape(m, out_shape);
    for (i = 0; i < rank; i++) classes *= out_shape[i];
    p = malloc((size_t)classes * sizeof *p);
    if (!p) return 1;
    CHECK(nnl_predict(m, x, in_rank + 1, x_shape, 0, p, classes));
    printf("%s: class probabilities\n", image_path);
    for (i = 0; i < classes; i++) {
        printf("  %d: %.4f\n", i, p[i]);
        sum += p[i];
        if (p[i] > p[best]) best = i;
    }
    printf("predicted: %d (p = %.4f; the probabilities sum to %.4f)\n", best, p[best], sum);
    free(p);
    nnl_model_free(m);
    return 0;
}
