#version 330
// Deliberately a single multiply: on Mesa llvmpipe any cross-channel arithmetic here (a colour
// matrix, even a uniform branch) doubles the cost of a 1080p frame, so colour grading is done on
// the small panel images before upload (see compositor.py) and only the master fade and the
// crossfade opacity remain per pixel.
in vec2 uv;
uniform sampler2D image;
uniform vec4 gain;     // (fade, fade, fade, opacity)
out vec4 colour;

void main() {
    colour = texture(image, uv) * gain;
}
