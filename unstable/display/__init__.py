"""Display: the ModernGL compositor (panels -> one frame), GL contexts and the window.

    from unstable.display.gl import create_headless_context
    from unstable.display.compositor import Compositor
    from unstable.display.layout import Layout, Scene     # no GL import
    from unstable.display.window import open_window
"""
