"""Image-quality metrics for scoring reconstructions (PSNR, SSIM, LPIPS), on the torch device."""
