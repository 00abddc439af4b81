#version 330
// One textured quad per draw. Corners come in as the unit square with y pointing DOWN (0 = top),
// so `rect` (NDC) and `uv_rect` (texture space, v = 0 is the image's top row) are both given as
// (top-left, bottom-right). Which way is up on the target is decided on the CPU, where the
// offscreen target is drawn upside down so that reading it back gives rows top-to-bottom.
in vec2 corner;
uniform vec4 rect;     // x0, y0, x1, y1 in normalised device coordinates
uniform vec4 uv_rect;  // u0, v0, u1, v1
out vec2 uv;

void main() {
    uv = mix(uv_rect.xy, uv_rect.zw, corner);
    gl_Position = vec4(mix(rect.xy, rect.zw, corner), 0.0, 1.0);
}
