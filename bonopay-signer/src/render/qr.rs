//! QR codes as images (SVG and PNG) for receipts and screens. The QR
//! *payload* and its verification are part of the sealed format
//! ([`crate::sealed`]); this is only drawing.

use super::RenderError;

/// The QR code as SVG (error-correction level M, as the DGI layout asks).
///
/// # Errors
/// [`RenderError::QrTooLong`] if the text does not fit in a QR code.
pub fn qr_svg(text: &str) -> Result<String, RenderError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| RenderError::QrTooLong(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

/// The QR code as a PNG (black on white, `scale` pixels per module, 4-module quiet zone).
///
/// # Errors
/// [`RenderError::QrTooLong`] if the text does not fit,
/// [`RenderError::Png`] if encoding fails.
pub fn qr_png(text: &str, scale: u32) -> Result<Vec<u8>, RenderError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| RenderError::QrTooLong(e.to_string()))?;
    let width = code.width();
    let colors = code.to_colors();
    let scale = scale.max(1) as usize;
    let quiet = 4;
    let side = (width + 2 * quiet) * scale;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % width + quiet, i / width + quiet);
            for dy in 0..scale {
                let row = (y * scale + dy) * side;
                pixels[row + x * scale..row + (x + 1) * scale].fill(0);
            }
        }
    }
    let side32 = u32::try_from(side)
        .map_err(|_| RenderError::QrTooLong("the image side overflows".into()))?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side32, side32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| RenderError::Png(e.to_string()))?;
        w.write_image_data(&pixels)
            .map_err(|e| RenderError::Png(e.to_string()))?;
    }
    Ok(out)
}
